package gateway

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"dpersona/internal/obs"
	"dpersona/internal/testutil"
)

// floodFrom opens n TCP connections to addr from the loopback address src that never send a byte,
// as a port scanner or an attacker would, and closes them when the test ends.
func floodFrom(t *testing.T, src, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Skipf("cannot connect from %s (loopback alias missing?): %v", src, err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	// Let the server accept them all before the real peer comes.
	time.Sleep(200 * time.Millisecond)
	return conns
}

// closedByServer reports whether the server closed c within d (a read ends with EOF or reset,
// not with a timeout).
func closedByServer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}

// Silent TCP connections from one host (127.0.0.2) must not take the association slots of an
// allowed modality on 127.0.0.1 (issue 14 item 3): a slot is taken only once the peer passed the
// host allow-list and sent an acceptable A-ASSOCIATE-RQ; the flooding host's connections beyond
// its small per-host cap are closed at once.
func TestSilentFloodFromOneHostDoesNotBlockAnother(t *testing.T) {
	testutil.RequireTool(t, "echoscu")
	g := startGateway(t, gatewayOptions{maxAssoc: 4})
	flood := floodFrom(t, "127.0.0.2", g.addr, 3*MinPendingPerHost)
	for i := 0; i < 3; i++ {
		out, err := runTool(t, 20*time.Second, "echoscu", "-v", "-aet", "MODALITY", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port))
		if err != nil || !strings.Contains(out, "Received Echo Response (Success)") {
			t.Fatalf("allowed peer on 127.0.0.1 blocked by a silent flood from 127.0.0.2 (attempt %d): %v\n%s", i+1, err, out)
		}
	}
	open := 0
	for _, c := range flood {
		if !closedByServer(c, 50*time.Millisecond) {
			open++
		}
	}
	if limit := g.srv.cfg.MaxPendingPerHost; open > limit {
		t.Fatalf("%d silent connections from one host held open, want at most the per-host cap %d", open, limit)
	}
}

// The same on the DICOM TLS port: connections that never send a TLS hello take no slot.
func TestSilentFloodOnTLSPortDoesNotBlockAnother(t *testing.T) {
	testutil.RequireTool(t, "echoscu")
	pki := testutil.NewTLSFiles(t)
	cfg, err := ServerTLSConfig(pki.ServerCert, pki.ServerKey, pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayOptions{maxAssoc: 4, tls: cfg})
	floodFrom(t, "127.0.0.2", g.addr, 3*MinPendingPerHost)
	out, err := runTool(t, 20*time.Second, "echoscu", "-v", "+tls", pki.ClientKey, pki.ClientCert, "+cf", pki.CA,
		"-aet", "TLSMOD", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port))
	if err != nil || !strings.Contains(out, "Received Echo Response (Success)") {
		t.Fatalf("TLS peer on 127.0.0.1 blocked by a silent flood from 127.0.0.2: %v\n%s", err, out)
	}
}

// With a host allow-list, a connection from a host in no entry is closed at once, before TLS or
// any PDU, and counted as host_not_allowed; it never holds a slot.
func TestUnlistedHostClosedAtOnce(t *testing.T) {
	testutil.RequireTool(t, "echoscu")
	g := startGateway(t, gatewayOptions{maxAssoc: 2, policy: Policy{AETitles: []string{"DPERSONA"},
		Peers: []Peer{{AETitle: "MODALITY", Hosts: []string{"127.0.0.1"}}}}})
	before := obs.RejectionsTotal.With(obs.RejectHostNotAllowed).Value()
	flood := floodFrom(t, "127.0.0.2", g.addr, 8)
	for i, c := range flood {
		if !closedByServer(c, 2*time.Second) {
			t.Fatalf("connection %d from the unlisted host 127.0.0.2 still open", i)
		}
	}
	if got := obs.RejectionsTotal.With(obs.RejectHostNotAllowed).Value() - before; got != float64(len(flood)) {
		t.Fatalf("host_not_allowed counted %v, want %d", got, len(flood))
	}
	out, err := runTool(t, 20*time.Second, "echoscu", "-v", "-aet", "MODALITY", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port))
	if err != nil || !strings.Contains(out, "Received Echo Response (Success)") {
		t.Fatalf("listed peer refused: %v\n%s", err, out)
	}
}

// A connection that has not sent its A-ASSOCIATE-RQ (or TLS hello) within the short pending
// timeout is closed, whatever ARTIM says.
func TestPendingConnectionDeadline(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			opt := gatewayOptions{pendingTimeout: 300 * time.Millisecond}
			if useTLS {
				pki := testutil.NewTLSFiles(t)
				cfg, err := ServerTLSConfig(pki.ServerCert, pki.ServerKey, "")
				if err != nil {
					t.Fatal(err)
				}
				opt.tls = cfg
			}
			g := startGateway(t, opt)
			start := time.Now()
			c := floodFrom(t, "127.0.0.1", g.addr, 1)[0]
			if !closedByServer(c, 5*time.Second) {
				t.Fatal("silent connection still open after 5 s")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("silent connection closed after %v, want about the 300 ms pending timeout", d)
			}
		})
	}
}
