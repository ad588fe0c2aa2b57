package swarm_test

import (
	"os"
	"syscall"
)

// statGID is the group owning the file (the Docker socket's, for lb's
// container to use it).
func statGID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid)
	}
	return 0
}
