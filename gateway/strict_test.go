package gateway

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"dpersona/gateway/dimse"
	"dpersona/gateway/pdu"
	"dpersona/gateway/ul"
	"dpersona/internal/testutil"
)

// PS3.8 9.3.2.2: presentation context IDs are odd (1-255) and unique within the request. An
// A-ASSOCIATE-RQ with an even or repeated ID is refused (A-ABORT, invalid PDU parameter value),
// never accepted.
func TestPresentationContextIDsOddAndUnique(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	v := verificationContext()
	for name, pcs := range map[string][]pdu.PresentationContextRQ{
		"even":      {{ID: 2, AbstractSyntax: v.AbstractSyntax, TransferSyntaxes: v.TransferSyntaxes}},
		"duplicate": {v, v},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rq := &pdu.AssociateRQ{CalledAE: "DPERSONA", CallingAE: "ODDITY", ApplicationContext: pdu.ApplicationContextName, PresentationContexts: pcs, UserInfo: pdu.UserInfo{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4"}}
			c.Write(rq.Encode())
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			ans, err := pdu.Read(c, 1<<20)
			if _, ok := ans.(*pdu.AssociateAC); ok {
				t.Fatalf("association with %s presentation context IDs accepted", name)
			}
			if err == nil {
				if _, ok := ans.(*pdu.Abort); !ok {
					t.Fatalf("want A-ABORT, got %#v", ans)
				}
			}
		})
	}
}

// storeRaw sends one C-STORE on an association made by rawAssociate and returns the response.
func storeRaw(t *testing.T, c net.Conn, msgID uint16, sopClass, sopInstance string, data []byte) *dimse.Command {
	t.Helper()
	return sendStore(t, c, 1, &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: msgID, AffectedSOPClassUID: sopClass, AffectedSOPInstanceUID: sopInstance, CommandDataSetType: dimse.DataSetPresent}, data)
}

// withLeadingZero turns a UID into one of the same length whose longest component starts with a
// zero ("1.2.5962.3" -> "1.2.0962.3").
func withLeadingZero(uid string) string {
	parts := strings.Split(uid, ".")
	best := 0
	for i, p := range parts {
		if len(p) > len(parts[best]) {
			best = i
		}
	}
	parts[best] = "0" + parts[best][1:]
	return strings.Join(parts, ".")
}

// UIDs the standard forbids get a failure status, not an A-ABORT and not a stored file, and the
// association stays usable: a 255-character UID in the command, a UID with a leading-zero
// component (command or data set), and a non-UID value (a patient name) in a UID field, which
// must not appear in the log or the response (PHI).
func TestInvalidUIDsGetFailureStatus(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	meta, inst, data := readFixture(t, testutil.Testdata("dicom", "ct2-pydicom", "17106"))
	c := rawAssociate(t, g.addr, "STRICT", "DPERSONA", pdu.PresentationContextRQ{ID: 1, AbstractSyntax: meta.MediaStorageSOPClassUID, TransferSyntaxes: []string{meta.TransferSyntaxUID}})
	defer c.Close()
	const name = "DOE^JOHN^PATIENT"
	long := strings.Repeat("1.2", 85) // 255 characters
	zeroSOP := withLeadingZero(inst.SOPInstanceUID)
	zeroStudy := withLeadingZero(inst.StudyInstanceUID)
	nameStudy := (name + strings.Repeat("X", len(inst.StudyInstanceUID)))[:len(inst.StudyInstanceUID)]
	replace := func(old, new string) []byte { return []byte(strings.Replace(string(data), old, new, 1)) }
	cases := []struct {
		what, sopInstance string
		data              []byte
	}{
		{"255-character UID in the command", long, data},
		{"leading zero in the command's and data set's SOP instance UID", zeroSOP, replace(inst.SOPInstanceUID, zeroSOP)},
		{"leading zero in the data set's study UID", inst.SOPInstanceUID, replace(inst.StudyInstanceUID, zeroStudy)},
		{"patient name in the command's SOP instance UID", name, data},
		{"patient name in the data set's study UID", inst.SOPInstanceUID, replace(inst.StudyInstanceUID, nameStudy)},
	}
	for i, cs := range cases {
		rsp := storeRaw(t, c, uint16(i+1), meta.MediaStorageSOPClassUID, cs.sopInstance, cs.data)
		if rsp.Status.Category() != dimse.CategoryFailure || rsp.MessageIDBeingRespondedTo != uint16(i+1) {
			t.Fatalf("%s: got status 0x%04X, want a failure status", cs.what, uint16(rsp.Status))
		}
		if strings.Contains(rsp.ErrorComment, "DOE") || strings.Contains(rsp.AffectedSOPInstanceUID, "DOE") {
			t.Fatalf("%s: response carries the non-UID value: %q / %q", cs.what, rsp.ErrorComment, rsp.AffectedSOPInstanceUID)
		}
	}
	if n := len(storedFiles(t, g.dataDir)); n != 0 {
		t.Fatalf("%d invalid instances stored", n)
	}
	if rsp := storeRaw(t, c, 99, meta.MediaStorageSOPClassUID, inst.SOPInstanceUID, data); rsp.Status != dimse.StatusSuccess {
		t.Fatalf("valid instance after the refusals: status 0x%04X", uint16(rsp.Status))
	}
	if logs := g.logs.String(); strings.Contains(logs, "DOE") || strings.Contains(logs, long) {
		t.Fatalf("a non-UID value from a UID field was logged verbatim:\n%s", logs)
	}
}

// BCP 195: on TLS 1.2 only AEAD cipher suites (AES-GCM, ChaCha20-Poly1305) with forward secrecy
// are offered; a client that offers only CBC-SHA suites fails the handshake.
func TestTLS12OnlyAEADSuites(t *testing.T) {
	pki := testutil.NewTLSFiles(t)
	cfg, err := ServerTLSConfig(pki.ServerCert, pki.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayOptions{tls: cfg})
	dial := func(suites []uint16) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", g.addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: suites})
		if err == nil {
			c.Close()
		}
		return err
	}
	cbc := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
	if err := dial(cbc); err == nil {
		t.Fatal("TLS 1.2 handshake with only CBC-SHA / non-forward-secret suites succeeded")
	}
	aead := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	if err := dial(aead); err != nil {
		t.Fatalf("TLS 1.2 with AES-GCM: %v", err)
	}
	for _, s := range cfg.CipherSuites {
		if name := tls.CipherSuiteName(s); !strings.Contains(name, "GCM") && !strings.Contains(name, "CHACHA20") || !strings.Contains(name, "ECDHE") {
			t.Errorf("server offers %s", name)
		}
	}
}

// An established association that sends nothing releases its slot after the idle timeout, which
// defaults to far less than the old 5 minutes.
func TestIdleAssociationReleasesSlot(t *testing.T) {
	if d := ul.DefaultConfig().IdleTimeout; d > time.Minute {
		t.Fatalf("default idle timeout %v: an idle peer holds a slot that long", d)
	}
	testutil.RequireTool(t, "echoscu")
	g := startGateway(t, gatewayOptions{maxAssoc: 1, ul: ul.Config{IdleTimeout: 300 * time.Millisecond}})
	c := rawAssociate(t, g.addr, "IDLER", "DPERSONA", verificationContext())
	defer c.Close()
	expectAbortOrClose(t, c)
	out, err := runTool(t, 20*time.Second, "echoscu", "-v", "-aet", "NEXT", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port))
	if err != nil || !strings.Contains(out, "Received Echo Response (Success)") {
		t.Fatalf("slot not released by the idle association: %v\n%s", err, out)
	}
}
