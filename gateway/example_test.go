package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"dpersona/gateway"
	"dpersona/gateway/assembly"
	"dpersona/gateway/scu"
	"dpersona/gateway/store"
	"dpersona/internal/testutil"
)

// A storage SCP on loopback: instances go to a durable store, studies are handed to a sink once
// quiet, and Shutdown lets the association in progress finish before it returns. In dpersona the
// sink is the bus (dispatch); here it prints the study.
func Example() {
	dataDir, err := os.MkdirTemp("", "gateway-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dataDir)
	quiet := slog.New(slog.DiscardHandler)

	st, err := store.Open(dataDir, store.Options{})
	if err != nil {
		panic(err)
	}
	completed := make(chan struct{})
	sink := gateway.StudySinkFunc(func(ctx context.Context, s gateway.CompletedStudy) error {
		fmt.Printf("study %s from %s to %s: %d series, %d instances\n",
			s.StudyInstanceUID, s.CallingAE, s.CalledAE, len(s.Series), len(s.Series[0].Instances))
		close(completed)
		return nil // nil: durably accepted, the gateway may forget the study
	})
	asm, err := assembly.New(assembly.Config{Store: st, QuietWindow: 200 * time.Millisecond, Sink: sink, Logger: quiet})
	if err != nil {
		panic(err)
	}
	srv, err := gateway.NewServer(gateway.Config{Policy: gateway.Policy{AETitles: []string{"DPERSONA"}}, Logger: quiet}, st, asm)
	if err != nil {
		panic(err)
	}
	ctx, stopAssembly := context.WithCancel(context.Background())
	assembled := make(chan struct{})
	go func() { asm.Run(ctx); close(assembled) }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	// A modality sends one CT slice.
	file := testutil.Testdata("dicom", "ct2-pydicom", "17106")
	props, err := scu.ProposalsForFiles([]string{file})
	if err != nil {
		panic(err)
	}
	c, err := scu.Dial(ctx, l.Addr().String(), scu.Options{CallingAE: "CT1", CalledAE: "DPERSONA"}, props)
	if err != nil {
		panic(err)
	}
	res, err := c.StoreFile(ctx, file)
	fmt.Printf("C-STORE: status 0x%04X (%s), err %v\n", res.Status, res.Status.Text(), err)
	c.Release()
	<-completed

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(shutdownCtx))
	fmt.Println("serve:", <-served)
	stopAssembly()
	<-assembled
	stored, _ := filepath.Glob(filepath.Join(dataDir, "studies", "*", "*", "*", "*.dcm"))
	fmt.Println("files kept:", len(stored))
	// Output:
	// C-STORE: status 0x0000 (success), err <nil>
	// study 1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.1 from CT1 to DPERSONA: 1 series, 1 instances
	// shutdown: <nil>
	// serve: gateway: server closed
	// files kept: 1
}
