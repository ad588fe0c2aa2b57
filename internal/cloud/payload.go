package cloud

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
)

// maxPayload bounds a response body read from the cloud: Lambda's synchronous
// response limit is 6 MB.
const maxPayload = 8 << 20

// reply is what the shim or Lambda itself returns, in any of the shapes the
// Lambda payload contract allows.
type reply struct {
	StatusCode   *int            `json:"statusCode"`
	Body         json.RawMessage `json:"body"`
	Headers      map[string]any  `json:"headers"`
	ColdStart    bool            `json:"coldStart"`
	ErrorType    string          `json:"errorType"`
	ErrorMessage string          `json:"errorMessage"`
	Traceback    json.RawMessage `json:"traceback"`
	StackTrace   []string        `json:"stackTrace"`
	Ping         bool            `json:"ping"` // the shim's answer to a keep-warm ping
}

// pong is parsePayload's value for the shim's answer to a keep-warm ping.
type pong struct{}

// parsePayload turns a Lambda response payload into the function's result.
// functionError is Lambda's X-Amz-Function-Error ("" when none or when the
// payload came through API Gateway, which drops the header).
//
//   - {"statusCode":200,"body":R,"coldStart":b}: R, with ints as int64.
//   - {"statusCode":200,"ping":true,"coldStart":b}: pong{}, the answer to a keep-warm ping.
//   - {"statusCode":500,"errorType":T,"errorMessage":M}: *spillway.FunctionError.
//   - {"statusCode":413,...}: the result was over the shim's cap, spillway.ErrPayloadTooLarge.
//   - {"errorMessage":"... Task timed out after N seconds"}: spillway.ErrTimeout.
//   - any other Lambda error payload: spillway.ErrRunnerCrashed with type and message.
//   - a proxy-shaped object whose body is the JSON of one of the above: unwrapped once.
func parsePayload(data []byte, functionError string) (value any, cold bool, err error) {
	return parsePayloadDepth(data, functionError, 0)
}

func parsePayloadDepth(data []byte, functionError string, depth int) (any, bool, error) {
	var r reply
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return nil, false, fmt.Errorf("decode Lambda payload %q: %w", clip(data), err)
	}
	if isTimeout(r.ErrorMessage) {
		return nil, r.ColdStart, fmt.Errorf("Lambda: %s: %w", r.ErrorMessage, spillway.ErrTimeout)
	}
	if r.StatusCode == nil {
		if functionError != "" || r.ErrorType != "" || r.ErrorMessage != "" {
			return nil, r.ColdStart, fmt.Errorf("Lambda %s error %s: %s: %w",
				orDefault(functionError, "unhandled"), orDefault(r.ErrorType, "unknown"), r.ErrorMessage, spillway.ErrRunnerCrashed)
		}
		return nil, false, fmt.Errorf("Lambda payload without statusCode: %q", clip(data))
	}
	// A proxy-shaped answer carries the shim's object as a JSON string body.
	if r.Headers != nil && depth == 0 {
		var s string
		if err := json.Unmarshal(r.Body, &s); err == nil && strings.HasPrefix(strings.TrimSpace(s), "{") {
			return parsePayloadDepth([]byte(s), functionError, depth+1)
		}
	}
	switch code := *r.StatusCode; {
	case code == 200 && r.Ping:
		return pong{}, r.ColdStart, nil
	case code == 200:
		v, err := lambdawrap.DecodeResult(r.Body)
		if err != nil {
			return nil, r.ColdStart, fmt.Errorf("decode function result: %w", err)
		}
		return v, r.ColdStart, nil
	case code == 413:
		return nil, r.ColdStart, fmt.Errorf("function result: %s: %s: %w", r.ErrorType, r.ErrorMessage, spillway.ErrPayloadTooLarge)
	case code == 400:
		return nil, r.ColdStart, fmt.Errorf("function rejected the event: %s: %s: %w", r.ErrorType, r.ErrorMessage, spillway.ErrInvalidParams)
	case r.ErrorType != "" || r.ErrorMessage != "":
		return nil, r.ColdStart, &spillway.FunctionError{Type: orDefault(r.ErrorType, "Exception"), Message: r.ErrorMessage, Traceback: traceback(r)}
	default:
		return nil, r.ColdStart, fmt.Errorf("function answered status %d: %s", code, clip(r.Body))
	}
}

// isTimeout recognises Lambda's own timeout message.
func isTimeout(msg string) bool {
	return strings.Contains(msg, "Task timed out")
}

func traceback(r reply) string {
	if len(r.Traceback) > 0 {
		var s string
		if json.Unmarshal(r.Traceback, &s) == nil {
			return s
		}
		var lines []string
		if json.Unmarshal(r.Traceback, &lines) == nil {
			return strings.Join(lines, "")
		}
	}
	return strings.Join(r.StackTrace, "")
}

// apiMessage extracts API Gateway's {"message": "..."} error text.
func apiMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
		Msg     string `json:"Message"`
	}
	if json.Unmarshal(body, &m) == nil {
		if m.Message != "" {
			return m.Message
		}
		if m.Msg != "" {
			return m.Msg
		}
	}
	return string(clip(body))
}

func clip(b []byte) []byte {
	const n = 200
	if len(b) > n {
		return append(b[:n:n], "..."...)
	}
	return b
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// errPayloadTooLarge is returned when the cloud's answer exceeds maxPayload.
var errPayloadTooLarge = errors.New("cloud response larger than 8 MiB")
