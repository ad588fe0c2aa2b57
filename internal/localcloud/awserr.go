package localcloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// apiError is an error answered the way the AWS REST-JSON services answer it:
// an HTTP status, the X-Amzn-ErrorType header and a JSON body with __type and
// message (plus the capitalised Type/Message pair Lambda's models read).
type apiError struct {
	Status  int
	Code    string // e.g. ResourceNotFoundException
	Message string
	// Reason fills Lambda's TooManyRequestsException.Reason.
	Reason string
	// RetryAfter, when set, is sent as the Retry-After header (seconds).
	RetryAfter string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Lambda error constructors.
func errLambdaNotFound(format string, args ...any) *apiError {
	return errorf(http.StatusNotFound, "ResourceNotFoundException", format, args...)
}

func errLambdaConflict(format string, args ...any) *apiError {
	return errorf(http.StatusConflict, "ResourceConflictException", format, args...)
}

func errLambdaInvalid(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "InvalidParameterValueException", format, args...)
}

func errLambdaThrottled(reason string) *apiError {
	return &apiError{
		Status:     http.StatusTooManyRequests,
		Code:       "TooManyRequestsException",
		Message:    "Rate Exceeded.",
		Reason:     reason,
		RetryAfter: "1",
	}
}

// API Gateway error constructors.
func errGWNotFound(format string, args ...any) *apiError {
	return errorf(http.StatusNotFound, "NotFoundException", format, args...)
}

func errGWConflict(format string, args ...any) *apiError {
	return errorf(http.StatusConflict, "ConflictException", format, args...)
}

func errGWBadRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "BadRequestException", format, args...)
}

// writeError answers err; anything that is not an *apiError is a 500
// ServiceException whose message says what failed.
func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{Status: http.StatusInternalServerError, Code: "ServiceException", Message: err.Error()}
	}
	body := map[string]string{
		"__type":  ae.Code,
		"message": ae.Message,
		"Message": ae.Message,
		"Type":    "User",
	}
	if ae.Status >= 500 {
		body["Type"] = "Service"
	}
	if ae.Reason != "" {
		body["Reason"] = ae.Reason
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-ErrorType", ae.Code)
	if ae.RetryAfter != "" {
		h.Set("Retry-After", ae.RetryAfter)
	}
	w.WriteHeader(ae.Status)
	_ = json.NewEncoder(w).Encode(body)
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, fmt.Errorf("encode response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decodeJSON reads a JSON request body of at most limit bytes into v. An
// empty body leaves v untouched.
func decodeJSON(r *http.Request, limit int64, v any, invalid func(string, ...any) *apiError) error {
	body := http.MaxBytesReader(nil, r.Body, limit)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "RequestEntityTooLargeException",
				"Request must be smaller than %d bytes for the operation", limit)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return invalid("Could not parse request body into json: %v", err)
	}
	return nil
}
