// Command fakeworker is a stand-in worker for the docker backend's tests: a
// static binary in a scratch image that reports, on GET /healthz, what it
// sees from inside its container (identity, function file, environment,
// writable paths, routes).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"strings"
	"syscall"
)

type facts struct {
	UID          int      `json:"uid"`
	GID          int      `json:"gid"`
	SHA256       string   `json:"sha256"`
	FileUID      int      `json:"file_uid"`
	FileMode     string   `json:"file_mode"`
	Env          []string `json:"env"`
	RootWritable bool     `json:"root_writable"`
	TaskWritable bool     `json:"task_writable"`
	FileWritable bool     `json:"file_writable"` // open for writing, or chmod (owner only)
	TmpWritable  bool     `json:"tmp_writable"`
	DefaultRoute bool     `json:"default_route"`
	TmpError     string   `json:"tmp_error"`
	Mounts       []string `json:"mounts"`
}

func writable(dir string) bool {
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

func main() {
	port := os.Getenv("SERVER_PORT")
	path := os.Getenv("FUNCTION_PATH")
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		var f facts
		f.UID, f.GID = os.Getuid(), os.Getgid()
		if b, err := os.ReadFile(path); err == nil {
			s := sha256.Sum256(b)
			f.SHA256 = hex.EncodeToString(s[:])
		}
		if st, err := os.Stat(path); err == nil {
			f.FileMode = st.Mode().String()
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				f.FileUID = int(sys.Uid)
			}
		}
		f.Env = os.Environ()
		f.RootWritable = writable("/")
		f.TaskWritable = writable("/var/task")
		if fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			fh.Close()
			f.FileWritable = true
		}
		if st, err := os.Stat(path); err == nil && os.Chmod(path, st.Mode().Perm()) == nil {
			f.FileWritable = true
		}
		f.TmpWritable = writable("/tmp")
		if _, err := os.CreateTemp("/tmp", "probe"); err != nil {
			f.TmpError = err.Error()
		}
		if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, " /tmp ") || strings.Contains(line, " /var/task ") || strings.Contains(line, " / ") {
					f.Mounts = append(f.Mounts, line)
				}
			}
		}
		if b, err := os.ReadFile("/proc/net/route"); err == nil {
			for _, line := range strings.Split(string(b), "\n")[1:] {
				if fs := strings.Fields(line); len(fs) > 1 && fs[1] == "00000000" {
					f.DefaultRoute = true
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(f)
	})
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
