package gateway

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"dpersona/gateway/dimse"
	"dpersona/gateway/part10"
	"dpersona/gateway/pdu"
	"dpersona/internal/testutil"
)

const ctImageStorage = "1.2.840.10008.5.1.4.1.1.2"

func verificationContext() pdu.PresentationContextRQ {
	return pdu.PresentationContextRQ{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}}
}

// rawAssociate opens a TCP connection and negotiates an association with hand-built PDUs, so tests
// can then misbehave on purpose.
func rawAssociate(t *testing.T, addr, calling, called string, pcs ...pdu.PresentationContextRQ) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rq := &pdu.AssociateRQ{CalledAE: called, CallingAE: calling, ApplicationContext: pdu.ApplicationContextName, PresentationContexts: pcs, UserInfo: pdu.UserInfo{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4"}}
	if _, err := c.Write(rq.Encode()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	v, err := pdu.Read(c, 1<<20)
	if err != nil {
		t.Fatalf("reading the association answer: %v", err)
	}
	if _, ok := v.(*pdu.AssociateAC); !ok {
		t.Fatalf("want A-ASSOCIATE-AC, got %#v", v)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

// expectAbortOrClose reads until the server sends A-ABORT or closes the connection.
func expectAbortOrClose(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for {
		h, err := pdu.ReadHeader(r)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("server neither aborted nor closed the association")
			}
			return // closed
		}
		if h.Type == pdu.TypeAbort {
			return
		}
		if _, err := io.CopyN(io.Discard, r, int64(h.Length)); err != nil {
			return
		}
	}
}

func pduBytes(typ byte, body []byte) []byte {
	b := make([]byte, pdu.HeaderLen, pdu.HeaderLen+len(body))
	pdu.PutHeader(b, typ, uint32(len(body)))
	return append(b, body...)
}

// Malformed and lying PDUs get the association aborted; the server keeps serving others.
func TestMalformedPDUsAbortAndServerSurvives(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	ctx := pdu.PresentationContextRQ{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{part10.ExplicitVRLittleEndian}}
	cases := []struct {
		name      string
		associate bool
		payload   []byte
	}{
		{"unknown PDU type before association", false, pduBytes(0x09, make([]byte, 4))},
		{"A-ASSOCIATE-RQ claiming 4 GiB", false, []byte{0x01, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1}},
		{"truncated A-ASSOCIATE-RQ items", false, pduBytes(pdu.TypeAssociateRQ, append(make([]byte, 68), 0x10, 0, 0xFF, 0xFF, '1'))},
		{"P-DATA-TF longer than the advertised maximum", true, []byte{0x04, 0, 0x7F, 0xFF, 0xFF, 0xFF}},
		{"PDV length beyond its PDU", true, pduBytes(pdu.TypePDataTF, []byte{0, 0, 0x10, 0, 1, 3, 1, 2})},
		{"PDV on a context never negotiated", true, pduBytes(pdu.TypePDataTF, []byte{0, 0, 0, 4, 9, 3, 1, 2})},
		{"data set before any command", true, pduBytes(pdu.TypePDataTF, []byte{0, 0, 0, 4, 1, 2, 1, 2})},
		{"garbage command set", true, pduBytes(pdu.TypePDataTF, []byte{0, 0, 0, 10, 1, 3, 8, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F})},
		{"A-ASSOCIATE-RQ on an established association", true, pduBytes(pdu.TypeAssociateRQ, make([]byte, 68))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var conn net.Conn
			if c.associate {
				conn = rawAssociate(t, g.addr, "FUZZER", "DPERSONA", ctx)
			} else {
				var err error
				if conn, err = net.Dial("tcp", g.addr); err != nil {
					t.Fatal(err)
				}
			}
			defer conn.Close()
			conn.Write(c.payload)
			expectAbortOrClose(t, conn)
		})
	}
	if out, err := runTool(t, 20*time.Second, "echoscu", "-aet", "AFTER", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)); err != nil {
		t.Fatalf("server did not survive malformed PDUs: %v\n%s", err, out)
	}
	if n := len(storedFiles(t, g.dataDir)); n != 0 {
		t.Fatalf("%d instances stored from malformed traffic", n)
	}
	if s := g.srv.Stats(); s.ActiveAssociations > 1 {
		t.Fatalf("%d associations still active", s.ActiveAssociations)
	}
}

// A peer that disconnects in the middle of a data set leaves nothing behind: no stored file, no
// temporary file, no study.
func TestDisconnectMidTransfer(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	meta, _, data := readFixture(t, testutil.Testdata("dicom", "lidc-ct-0005", "001.dcm"))
	c := rawAssociate(t, g.addr, "FLAKY", "DPERSONA", pdu.PresentationContextRQ{ID: 1, AbstractSyntax: meta.MediaStorageSOPClassUID, TransferSyntaxes: []string{meta.TransferSyntaxUID}})
	cmd := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: meta.MediaStorageSOPClassUID, AffectedSOPInstanceUID: meta.MediaStorageSOPInstanceUID, CommandDataSetType: dimse.DataSetPresent}).Encode()
	w := bufio.NewWriter(c)
	w.Write((&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: cmd}}}).Encode())
	// Half of the data set in 8 KiB fragments, then the connection drops.
	half := data[:len(data)/2]
	for len(half) > 0 {
		n := min(8192, len(half))
		w.Write((&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Data: half[:n]}}}).Encode())
		half = half[n:]
	}
	w.Flush()
	testutil.WaitFor(t, 5*time.Second, "the partial instance in DATA/incoming", func() bool {
		e, _ := os.ReadDir(g.dataDir + "/incoming")
		return len(e) == 1
	})
	c.Close()
	testutil.WaitFor(t, 5*time.Second, "the association to end", func() bool { return g.srv.Stats().ActiveAssociations == 0 })
	if e, _ := os.ReadDir(g.dataDir + "/incoming"); len(e) != 0 {
		t.Fatalf("temporary file left behind: %v", e)
	}
	if n := len(storedFiles(t, g.dataDir)); n != 0 {
		t.Fatalf("%d instances stored from an interrupted transfer", n)
	}
	if s := g.asm.Studies(); len(s) != 0 {
		t.Fatalf("interrupted transfer counted in a study: %+v", s)
	}
	if !strings.Contains(g.logs.String(), "partial instance discarded") {
		t.Fatalf("interruption not logged")
	}
}

// sendStore sends one C-STORE with a hand-built command and data set and returns the response.
func sendStore(t *testing.T, c net.Conn, pcID byte, cmd *dimse.Command, data []byte) *dimse.Command {
	t.Helper()
	w := bufio.NewWriter(c)
	w.Write((&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: pcID, Command: true, Last: true, Data: cmd.Encode()}}}).Encode())
	// Several PDVs in one P-DATA-TF: the server must read all of them.
	var pdvs []pdu.PDV
	for len(data) > 0 {
		n := min(4000, len(data))
		pdvs = append(pdvs, pdu.PDV{ContextID: pcID, Data: data[:n], Last: n == len(data)})
		data = data[n:]
	}
	for len(pdvs) > 0 {
		n := min(3, len(pdvs))
		w.Write((&pdu.PDataTF{PDVs: pdvs[:n]}).Encode())
		pdvs = pdvs[n:]
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	v, err := pdu.Read(c, 1<<20)
	if err != nil {
		t.Fatalf("reading the C-STORE response: %v", err)
	}
	p, ok := v.(*pdu.PDataTF)
	if !ok || len(p.PDVs) != 1 || !p.PDVs[0].Command || !p.PDVs[0].Last {
		t.Fatalf("want one command PDV, got %#v", v)
	}
	rsp, err := dimse.Decode(p.PDVs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	return rsp
}

func TestStoreStatuses(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	meta, inst, data := readFixture(t, testutil.Testdata("dicom", "ct2-pydicom", "17106"))
	c := rawAssociate(t, g.addr, "TESTER", "DPERSONA", pdu.PresentationContextRQ{ID: 1, AbstractSyntax: meta.MediaStorageSOPClassUID, TransferSyntaxes: []string{"1.2.840.10008.1.2.4.100", meta.TransferSyntaxUID}}, pdu.PresentationContextRQ{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.4", TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}})
	defer c.Close()
	store := func(msgID uint16, sopInstance string, pcID byte) *dimse.Command {
		return sendStore(t, c, pcID, &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: msgID, AffectedSOPClassUID: meta.MediaStorageSOPClassUID, AffectedSOPInstanceUID: sopInstance, CommandDataSetType: dimse.DataSetPresent}, data)
	}
	if rsp := store(1, inst.SOPInstanceUID+".99", 1); rsp.Status != dimse.StatusDataSetDoesNotMatchClass || rsp.MessageIDBeingRespondedTo != 1 || !strings.Contains(rsp.ErrorComment, "SOPInstanceUID") {
		t.Fatalf("SOPInstanceUID mismatch: got %v comment %q", rsp, rsp.ErrorComment)
	}
	if rsp := store(2, inst.SOPInstanceUID, 3); rsp.Status != dimse.StatusSOPClassNotSupported {
		t.Fatalf("CT sent on the MR context: got %v", rsp)
	}
	if rsp := store(3, inst.SOPInstanceUID, 1); rsp.Status != dimse.StatusSuccess || rsp.AffectedSOPInstanceUID != inst.SOPInstanceUID {
		t.Fatalf("valid instance: got %v", rsp)
	}
	// Re-sending the same instance succeeds and still leaves exactly one copy.
	if rsp := store(4, inst.SOPInstanceUID, 1); rsp.Status != dimse.StatusSuccess {
		t.Fatalf("re-sent instance: got %v", rsp)
	}
	if files := storedFiles(t, g.dataDir); len(files) != 1 {
		t.Fatalf("want exactly one stored file, got %v", files)
	}
	if s := g.asm.Studies(); len(s) != 1 || s[0].Instances != 1 {
		t.Fatalf("re-send counted twice: %+v", s)
	}
	// The negotiated transfer syntax was the decodable one, not MPEG-2 (offered first).
	stored, _ := os.Open(storedFiles(t, g.dataDir)[0])
	m, _, _, err := part10.ReadFileHeader(stored)
	stored.Close()
	if err != nil || m.TransferSyntaxUID != meta.TransferSyntaxUID || m.SourceAETitle != "TESTER" {
		t.Fatalf("stored meta %+v err %v", m, err)
	}
	// Release cleanly.
	c.Write(pdu.ReleaseRQ{}.Encode())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	v, err := pdu.Read(c, 1024)
	if _, ok := v.(*pdu.ReleaseRP); !ok || err != nil {
		t.Fatalf("want A-RELEASE-RP, got %#v, %v", v, err)
	}
}

func TestPresentationContextPolicy(t *testing.T) {
	g := startGateway(t, gatewayOptions{policy: Policy{AETitles: []string{"DPERSONA"}, DenySOPClasses: []string{"1.2.840.10008.5.1.4.1.1.4"}}})
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rq := &pdu.AssociateRQ{CalledAE: "DPERSONA", CallingAE: "PROPOSER", ApplicationContext: pdu.ApplicationContextName, UserInfo: pdu.UserInfo{MaxPDULength: 16384},
		PresentationContexts: []pdu.PresentationContextRQ{
			{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{part10.ImplicitVRLittleEndian, part10.ExplicitVRLittleEndian}},
			{ID: 3, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{"1.2.840.10008.1.2.4.100"}}, // MPEG-2: not decodable
			{ID: 13, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{"1.2.840.10008.1.2.4.90", part10.ExplicitVRLittleEndian}},
			{ID: 15, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2.4.70"}},
			{ID: 5, AbstractSyntax: "1.2.840.10008.5.1.4.1.2.2.1", TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}},
			{ID: 7, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.4", TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}},
			{ID: 9, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{part10.ExplicitVRBigEndian}},
			{ID: 11, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}},
		}}
	c.Write(rq.Encode())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	v, err := pdu.Read(c, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ac, ok := v.(*pdu.AssociateAC)
	if !ok {
		t.Fatalf("want AC, got %#v", v)
	}
	want := map[byte]pdu.PresentationContextAC{
		1:  {ID: 1, Result: pdu.ResultAcceptance, TransferSyntax: part10.ImplicitVRLittleEndian}, // the sender's first choice
		3:  {ID: 3, Result: pdu.ResultTransferSyntaxesNotSupported},
		5:  {ID: 5, Result: pdu.ResultAbstractSyntaxNotSupported},
		7:  {ID: 7, Result: pdu.ResultAbstractSyntaxNotSupported},
		9:  {ID: 9, Result: pdu.ResultTransferSyntaxesNotSupported},
		11: {ID: 11, Result: pdu.ResultAcceptance, TransferSyntax: part10.ImplicitVRLittleEndian},
		13: {ID: 13, Result: pdu.ResultAcceptance, TransferSyntax: "1.2.840.10008.1.2.4.90"}, // JPEG 2000, stored as received
		15: {ID: 15, Result: pdu.ResultTransferSyntaxesNotSupported},                         // no compression for Verification
	}
	if len(ac.PresentationContexts) != len(want) {
		t.Fatalf("got %d answers", len(ac.PresentationContexts))
	}
	for _, got := range ac.PresentationContexts {
		w := want[got.ID]
		if got.Result != w.Result || (w.Result == pdu.ResultAcceptance && got.TransferSyntax != w.TransferSyntax) {
			t.Errorf("context %d: got %+v want %+v", got.ID, got, w)
		}
	}
	if ac.UserInfo.MaxPDULength == 0 || ac.UserInfo.ImplementationClassUID == "" {
		t.Errorf("user info %+v", ac.UserInfo)
	}
	_ = binary.BigEndian
}

// Command and data set in one P-DATA-TF (allowed by PS3.8, used by some toolkits): both PDVs are
// read and the instance is stored.
func TestCommandAndDataInOnePDU(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	meta, _, data := readFixture(t, testutil.Testdata("dicom", "ct5n-pydicom", "2392"))
	c := rawAssociate(t, g.addr, "PACKED", "DPERSONA", pdu.PresentationContextRQ{ID: 1, AbstractSyntax: meta.MediaStorageSOPClassUID, TransferSyntaxes: []string{meta.TransferSyntaxUID}})
	defer c.Close()
	cmd := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 3, AffectedSOPClassUID: meta.MediaStorageSOPClassUID, AffectedSOPInstanceUID: meta.MediaStorageSOPInstanceUID, CommandDataSetType: dimse.DataSetPresent}).Encode()
	c.Write((&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: cmd}, {ContextID: 1, Last: true, Data: data}}}).Encode())
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	v, err := pdu.Read(c, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := dimse.Decode(v.(*pdu.PDataTF).PDVs[0].Data)
	if err != nil || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("response %v, %v", rsp, err)
	}
	if n := len(storedFiles(t, g.dataDir)); n != 1 {
		t.Fatalf("stored %d", n)
	}
}
