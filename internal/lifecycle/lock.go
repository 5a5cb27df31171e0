package lifecycle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFileName is the lock file in a data directory.
const LockFileName = ".lock"

// ErrLocked is wrapped by LockDataDir when another process holds the data directory.
var ErrLocked = errors.New("data directory in use by another process")

// DirLock is a held data-directory lock; Unlock releases it. The kernel releases it too when
// the process ends in any way (kill -9 included), so a crash never leaves a stale lock.
type DirLock struct {
	f *os.File
}

// LockDataDir takes an exclusive, non-blocking flock on DIR/.lock (creating DIR and the file)
// and writes this process's pid into the file. When another process holds it, the error wraps
// ErrLocked and names that process (its pid and command line, read from the lock file and
// /proc), so an operator sees at once which service to stop.
func LockDataDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by %s; stop that process or use another --data-dir", ErrLocked, dir, holder(path))
		}
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	// The pid is informational (the flock is the lock): written after taking it.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		f.Sync()
	}
	return &DirLock{f: f}, nil
}

// holder describes the process named in a lock file: "pid 1234 (dpersona serve --data-dir ...)".
func holder(path string) string {
	b, err := os.ReadFile(path)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil || pid <= 0 {
		return "another process (its pid is not recorded yet)"
	}
	desc := fmt.Sprintf("pid %d", pid)
	if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(cmd) > 0 {
		desc += " (" + strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")) + ")"
	}
	return desc
}

// Unlock releases the lock (the file stays; its content is only informational).
func (l *DirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the flock
	l.f = nil
	return err
}
