package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Storage failures of the embedded JetStream server, and recovery from them.
//
// When the disk fills, nats-server marks each file store that failed a write with a sticky
// "critical write error" (or, for some paths, disables JetStream altogether) and never clears it:
// every later write to that stream fails even after space returns, so study state stops moving
// until the process restarts. The bus therefore watches the server's own error reports and,
// once the store directory has room again, restarts JetStream inside the running server: the
// streams, KV buckets and consumers are recovered from disk with fresh file stores, the client
// connection (in-process) stays up, and the workers' consumers resume. Nothing acknowledged is
// lost: the gateway keeps every instance on disk and republishes a study whose event was not
// stored, and JetStream keeps every message it acknowledged.

// DefaultBusMinFreeBytes is the free space the embedded store needs before it is called healthy
// again after a failure (BusConfig.MinFreeBytes).
const DefaultBusMinFreeBytes = 8 << 20

// storageHealth is what the bus knows about its embedded store.
type storageHealth struct {
	mu     sync.Mutex
	failed string // the server's last storage error since the last recovery ("" = none)
	at     time.Time
}

// noteServerError is called with every error the embedded server logs; write failures of the
// store (disk full, quota, I/O errors) mark the storage failed until recovered.
func (b *Bus) noteServerError(msg string) {
	low := strings.ToLower(msg)
	if !strings.Contains(low, "critical write error") && !strings.Contains(low, "no space left") &&
		!strings.Contains(low, "out of storage") && !strings.Contains(low, "resources, will be disabled") && !strings.Contains(low, "disk quota") {
		return
	}
	b.storage.mu.Lock()
	if b.storage.failed == "" {
		b.storage.at = time.Now()
	}
	b.storage.failed = msg
	b.storage.mu.Unlock()
}

func (b *Bus) storageFailure() string {
	b.storage.mu.Lock()
	defer b.storage.mu.Unlock()
	return b.storage.failed
}

func (b *Bus) minFree() uint64 {
	if b.cfg.MinFreeBytes > 0 {
		return b.cfg.MinFreeBytes
	}
	return DefaultBusMinFreeBytes
}

// storeFree is the free space of the embedded store's file system.
func (b *Bus) storeFree() (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.cfg.StoreDir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// storageBlocked reports whether the embedded store cannot take writes now (failed, disabled or
// below MinFreeBytes): workers then take no new work.
func (b *Bus) storageBlocked() bool {
	if b.server == nil {
		return false
	}
	if b.storageFailure() != "" || !b.server.JetStreamEnabled() {
		return true
	}
	free, err := b.storeFree()
	return err == nil && free < b.minFree()
}

// Healthy reports whether the bus can take and store work now (the readiness check "nats"): the
// connection is up, JetStream answers, and for the embedded server its store has had no write
// failure since the last recovery and has at least MinFreeBytes free.
func (b *Bus) Healthy(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	if b.server != nil {
		if !b.server.JetStreamEnabled() {
			return errors.New("JetStream is disabled (storage failure); it is restarted once the store has room")
		}
		if f := b.storageFailure(); f != "" {
			return fmt.Errorf("JetStream cannot store: %s", f)
		}
		if free, err := b.storeFree(); err == nil && free < b.minFree() {
			return fmt.Errorf("JetStream store %s has %d MB free, below %d MB", b.cfg.StoreDir, free>>20, b.minFree()>>20)
		}
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("JetStream does not answer: %w", err)
	}
	return nil
}

// RunStorageRecovery restarts the embedded JetStream after a storage failure as soon as its store
// has MinFreeBytes free again, checking every second, until ctx ends. With an external cluster it
// returns at once (the cluster's operators own its storage).
func (b *Bus) RunStorageRecovery(ctx context.Context) error {
	if b.server == nil {
		return nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		failure := b.storageFailure()
		if failure == "" && b.server.JetStreamEnabled() {
			continue
		}
		free, err := b.storeFree()
		if err != nil || free < b.minFree() {
			continue
		}
		if err := b.restartJetStream(); err != nil {
			b.log.Error("JetStream restart after a storage failure failed; retrying", "err", err)
			continue
		}
		b.log.Warn("JetStream restarted after a storage failure: the store has room again", "failure", failure, "free_mb", free>>20)
	}
}

// restartJetStream stops JetStream in the embedded server and starts it again on the same store,
// which drops the failed file stores and recovers every stream and consumer from disk.
func (b *Bus) restartJetStream() error {
	b.storage.mu.Lock()
	b.storage.failed = ""
	b.storage.mu.Unlock()
	if b.server.JetStreamEnabled() {
		if err := b.server.ShutdownJetStream(); err != nil {
			return fmt.Errorf("shut JetStream down: %w", err)
		}
	}
	if err := b.server.EnableJetStream(&server.JetStreamConfig{StoreDir: b.cfg.StoreDir, SyncAlways: b.cfg.SyncAlways}); err != nil {
		return fmt.Errorf("enable JetStream on %s: %w", b.cfg.StoreDir, err)
	}
	return nil
}
