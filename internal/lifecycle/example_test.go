package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"dpersona/internal/lifecycle"
)

// A serving process: lock the data directory first, run every listener through one Group, and
// return Run's error so that a listener that died makes the process exit non-zero.
func Example() {
	dir, _ := os.MkdirTemp("", "example-data-")
	defer os.RemoveAll(dir)
	lock, err := lifecycle.LockDataDir(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lock.Unlock()
	_, err = lifecycle.LockDataDir(dir) // a second locker (here the same process, a new descriptor)
	fmt.Println("second lock refused:", errors.Is(err, lifecycle.ErrLocked))

	life := lifecycle.NewGroup(slog.New(slog.NewTextHandler(io.Discard, nil)), 0)
	stopped := make(chan struct{})
	life.Serve("DICOM listener", func() error {
		return errors.New("accept: too many open files") // the listener dies on its own
	}, func(context.Context) error { close(stopped); return nil })
	err = life.Run(context.Background())
	<-stopped
	fmt.Println(err)
	fmt.Println("ready after:", life.Ready(context.Background()))
	// Output:
	// second lock refused: true
	// DICOM listener: accept: too many open files
	// ready after: shutting down
}
