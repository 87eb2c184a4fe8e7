package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// One node per state directory. A second node on the same directory would
// enroll-race the first, take over its netmap stream (the coordinator
// keeps one per identity) and delete its local API socket on exit, so New
// takes an exclusive lock on StateDir/node.lock before it touches anything
// else there and Close releases it last. The lock is the kernel's (flock on
// Unix), so a crashed node leaves no stale lock behind; the file keeps the
// holder's PID for the error message only.

// ErrStateInUse is returned by New when another process (or another Node
// in this one) runs on the state directory.
var ErrStateInUse = errors.New("state directory in use")

// stateLock is a held lock on a state directory.
type stateLock struct{ f *os.File }

// lockState takes the exclusive lock on dir, which must exist, and writes
// our PID into the lock file. It fails at once, without waiting, when the
// lock is held.
func lockState(dir string) (*stateLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("overlay: lock state dir: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("overlay: lock %s: %w", path, err)
	}
	if !held {
		b, _ := os.ReadFile(path)
		f.Close()
		holder := "another process"
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			holder = "process " + strconv.Itoa(pid)
		}
		return nil, fmt.Errorf("overlay: %w: state %s is in use by %s; stop it first or use another --state", ErrStateInUse, dir, holder)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f}, nil
}

// unlock releases the lock. The file stays: removing it would let a
// third process lock a new file while a second still waits on the old.
func (l *stateLock) unlock() {
	if l == nil {
		return
	}
	l.f.Truncate(0)
	unlockFile(l.f)
	l.f.Close()
}
