package scu_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"dpersona/gateway"
	"dpersona/gateway/assembly"
	"dpersona/gateway/pdu"
	"dpersona/gateway/scu"
	"dpersona/gateway/store"
	"dpersona/gateway/ul"
	"dpersona/internal/testutil"
)

// Check a peer with C-ECHO, send it a file with C-STORE, release.
func ExampleDial() {
	addr, stop := startPeer("PACS")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	file := testutil.Testdata("dicom", "ct2-pydicom", "17106")
	props, err := scu.ProposalsForFiles([]string{file}) // Verification + the file's class and encoding
	if err != nil {
		panic(err)
	}
	c, err := scu.Dial(ctx, addr, scu.Options{CallingAE: "DPERSONA", CalledAE: "PACS"}, props)
	if err != nil {
		panic(err)
	}
	fmt.Println("C-ECHO:", c.Echo(ctx))
	res, err := c.StoreFile(ctx, file)
	if err != nil {
		panic(err)
	}
	fmt.Printf("C-STORE %s: 0x%04X, category %s\n", res.SOPInstanceUID, res.Status, res.Status.Category())
	fmt.Println("release:", c.Release())
	// Output:
	// C-ECHO: <nil>
	// C-STORE 1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.93: 0x0000, category success
	// release: <nil>
}

// A peer that does not know the called AE title rejects the association: the error wraps
// ul.ErrRejected and the A-ASSOCIATE-RJ with its result, source and reason.
func ExampleDial_rejected() {
	addr, stop := startPeer("PACS")
	defer stop()
	_, err := scu.Dial(context.Background(), addr, scu.Options{CallingAE: "DPERSONA", CalledAE: "NOT_PACS"}, scu.VerificationProposal())
	var rj pdu.AssociateRJ
	fmt.Println(errors.Is(err, ul.ErrRejected), errors.As(err, &rj))
	fmt.Println(rj.Result, "/", pdu.RejectReasonText(rj.Source, rj.Reason))
	// Output:
	// true true
	// permanent / service user: called AE title not recognized
}

// startPeer runs dpersona's own storage SCP on loopback as the peer of the examples.
func startPeer(aeTitle string) (addr string, stop func()) {
	dir, err := os.MkdirTemp("", "scu-example-")
	if err != nil {
		panic(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		panic(err)
	}
	asm, err := assembly.New(assembly.Config{Store: st, Logger: quiet,
		Sink: gateway.StudySinkFunc(func(context.Context, gateway.CompletedStudy) error { return nil })})
	if err != nil {
		panic(err)
	}
	srv, err := gateway.NewServer(gateway.Config{Policy: gateway.Policy{AETitles: []string{aeTitle}}, Logger: quiet}, st, asm)
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	return l.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		os.RemoveAll(dir)
	}
}
