package pdu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// be16/be32 and item build PS3.8 byte layouts by hand, independently of the encoder.
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func wireItem(typ byte, value []byte) []byte {
	return append(append([]byte{typ, 0}, be16(uint16(len(value)))...), value...)
}

func pduBytes(typ byte, body []byte) []byte {
	return append(append([]byte{typ, 0}, be32(uint32(len(body)))...), body...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// The A-ASSOCIATE-RQ layout of PS3.8 9.3.2, written out field by field.
func associateRQBytes(called, calling string) []byte {
	ae := func(s string) []byte { return []byte(s + strings.Repeat(" ", 16-len(s))) }
	pc := cat([]byte{1, 0, 0, 0},
		wireItem(0x30, []byte("1.2.840.10008.1.1")),
		wireItem(0x40, []byte("1.2.840.10008.1.2")),
		wireItem(0x40, []byte("1.2.840.10008.1.2.1")))
	ui := cat(wireItem(0x51, be32(16384)), wireItem(0x52, []byte("1.2.3.4")), wireItem(0x55, []byte("TEST_1")))
	body := cat(be16(1), []byte{0, 0}, ae(called), ae(calling), make([]byte, 32),
		wireItem(0x10, []byte(ApplicationContextName)), wireItem(0x20, pc), wireItem(0x50, ui))
	return pduBytes(TypeAssociateRQ, body)
}

func testRQ() *AssociateRQ {
	return &AssociateRQ{ProtocolVersion: 1, CalledAE: "DPERSONA", CallingAE: "CT1", ApplicationContext: ApplicationContextName,
		PresentationContexts: []PresentationContextRQ{{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}}},
		UserInfo:             UserInfo{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4", ImplementationVersionName: "TEST_1"}}
}

func TestAssociateRQLayout(t *testing.T) {
	want := associateRQBytes("DPERSONA", "CT1")
	if got := testRQ().Encode(); !bytes.Equal(got, want) {
		t.Fatalf("encoded A-ASSOCIATE-RQ differs from PS3.8 9.3.2:\n got %x\nwant %x", got, want)
	}
	v, err := Read(bytes.NewReader(want), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v, testRQ()) {
		t.Fatalf("decoded %+v\nwant    %+v", v, testRQ())
	}
}

func TestAssociateACLayoutAndRejectedContext(t *testing.T) {
	ac := &AssociateAC{ProtocolVersion: 1, CalledAE: "DPERSONA", CallingAE: "CT1", ApplicationContext: ApplicationContextName,
		PresentationContexts: []PresentationContextAC{{ID: 1, Result: ResultAcceptance, TransferSyntax: "1.2.840.10008.1.2.1"}, {ID: 3, Result: ResultAbstractSyntaxNotSupported}},
		UserInfo:             UserInfo{MaxPDULength: 262144}}
	b := ac.Encode()
	if b[0] != TypeAssociateAC || int(binary.BigEndian.Uint32(b[2:6])) != len(b)-HeaderLen {
		t.Fatalf("header %x does not announce the %d-byte body", b[:6], len(b)-HeaderLen)
	}
	// A rejected context still carries a transfer syntax sub-item (PS3.8 9.3.3.2): implicit VR LE.
	if !bytes.Contains(b, wireItem(0x21, cat([]byte{3, 0, ResultAbstractSyntaxNotSupported, 0}, wireItem(0x40, []byte("1.2.840.10008.1.2"))))) {
		t.Fatalf("rejected context 3 not encoded as PS3.8 9.3.3.2 wants: %x", b)
	}
	v, err := Read(bytes.NewReader(b), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	got := v.(*AssociateAC)
	if got.PresentationContexts[0] != ac.PresentationContexts[0] || got.PresentationContexts[1].Result != ResultAbstractSyntaxNotSupported || got.UserInfo.MaxPDULength != 262144 {
		t.Fatalf("decoded %+v", got)
	}
}

func TestFixedPDULayouts(t *testing.T) {
	for _, c := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"A-ASSOCIATE-RJ", (&AssociateRJ{Result: RejectTransient, Source: RejectSourceServiceProviderPresentation, Reason: RejectReasonTemporaryCongestion}).Encode(), pduBytes(TypeAssociateRJ, []byte{0, 2, 3, 1})},
		{"A-ABORT", (&Abort{Source: AbortSourceServiceProvider, Reason: AbortReasonInvalidParameterValue}).Encode(), pduBytes(TypeAbort, []byte{0, 0, 2, 6})},
		{"A-RELEASE-RQ", ReleaseRQ{}.Encode(), pduBytes(TypeReleaseRQ, []byte{0, 0, 0, 0})},
		{"A-RELEASE-RP", ReleaseRP{}.Encode(), pduBytes(TypeReleaseRP, []byte{0, 0, 0, 0})},
		{"P-DATA-TF", (&PDataTF{PDVs: []PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{0xAA}}, {ContextID: 3, Data: []byte{0xBB, 0xCC}}}}).Encode(),
			pduBytes(TypePDataTF, cat(be32(3), []byte{1, 0x03, 0xAA}, be32(4), []byte{3, 0x00, 0xBB, 0xCC}))},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s: got %x, want %x", c.name, c.got, c.want)
		}
		v, err := Read(bytes.NewReader(c.want), 1<<16)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		var again []byte
		switch p := v.(type) {
		case *AssociateRJ:
			again = p.Encode()
		case *Abort:
			again = p.Encode()
		case *ReleaseRQ:
			again = p.Encode()
		case *ReleaseRP:
			again = p.Encode()
		case *PDataTF:
			again = p.Encode()
		}
		if !bytes.Equal(again, c.want) {
			t.Errorf("%s: decode/encode gives %x", c.name, again)
		}
	}
}

func TestPaddingIsNotSignificant(t *testing.T) {
	b := associateRQBytes("DPERSONA", "CT1")
	// Pad the called AE with NULs and lead the calling AE with spaces (both seen from real peers).
	copy(b[HeaderLen+4:], "DPERSONA\x00\x00\x00\x00\x00\x00\x00\x00")
	copy(b[HeaderLen+20:], "   CT1          ")
	v, err := Read(bytes.NewReader(b), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	rq := v.(*AssociateRQ)
	if rq.CalledAE != "DPERSONA" || rq.CallingAE != "CT1" {
		t.Fatalf("AE titles %q %q", rq.CalledAE, rq.CallingAE)
	}
}

func TestUserInfoSubItems(t *testing.T) {
	ui := cat(wireItem(0x51, be32(32768)), wireItem(0x52, []byte("1.2.3\x00")), wireItem(0x53, []byte{0, 1, 0, 1}), // async ops: skipped
		wireItem(0x55, []byte("AN_OVERLONG_VERSION_NAME")))
	v, err := decodeUserInfo(ui)
	if err != nil {
		t.Fatal(err)
	}
	if v.MaxPDULength != 32768 || v.ImplementationClassUID != "1.2.3" || v.ImplementationVersionName != "AN_OVERLONG_VERS" {
		t.Fatalf("user info %+v", v)
	}
	if _, err := decodeUserInfo(wireItem(0x51, []byte{1, 2})); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a 2-byte maximum length decoded: %v", err)
	}
}

// Every malformed input is refused with ErrMalformed and an error naming what is wrong.
func TestDecodeRefusesMalformed(t *testing.T) {
	rq := associateRQBytes("DPERSONA", "CT1")
	body := rq[HeaderLen:]
	fixed := body[:68]
	ctx := wireItem(0x10, []byte(ApplicationContextName))
	ui := wireItem(0x50, wireItem(0x51, be32(16384)))
	pc := func(sub ...[]byte) []byte { return wireItem(0x20, cat(append([][]byte{{1, 0, 0, 0}}, sub...)...)) }
	as := wireItem(0x30, []byte("1.2.840.10008.1.1"))
	tsx := wireItem(0x40, []byte("1.2.840.10008.1.2"))
	for _, c := range []struct {
		name string
		typ  byte
		body []byte
		want string
	}{
		{"RQ shorter than its fixed part", TypeAssociateRQ, body[:60], "shorter than its 68-byte fixed part"},
		{"item longer than the PDU", TypeAssociateRQ, cat(fixed, []byte{0x10, 0, 0, 99}), "declares 99 bytes"},
		{"trailing bytes", TypeAssociateRQ, cat(fixed, ctx, []byte{0x20, 0}), "cannot hold an item header"},
		{"no application context", TypeAssociateRQ, cat(fixed, pc(as, tsx), ui), "without application context"},
		{"no presentation context", TypeAssociateRQ, cat(fixed, ctx, ui), "without presentation contexts"},
		{"no user information", TypeAssociateRQ, cat(fixed, ctx, pc(as, tsx)), "without user information"},
		{"unknown item", TypeAssociateRQ, cat(fixed, ctx, pc(as, tsx), ui, wireItem(0x77, nil)), "unexpected item 0x77"},
		{"context without transfer syntax", TypeAssociateRQ, cat(fixed, ctx, pc(as), ui), "lacks an abstract or transfer syntax"},
		{"two abstract syntaxes", TypeAssociateRQ, cat(fixed, ctx, pc(as, as, tsx), ui), "two abstract syntaxes"},
		{"UID over 64 characters", TypeAssociateRQ, cat(fixed, ctx, pc(wireItem(0x30, []byte("1."+strings.Repeat("2", 64))), tsx), ui), "UID has length 66"},
		{"empty UID", TypeAssociateRQ, cat(fixed, ctx, pc(wireItem(0x30, nil), tsx), ui), "UID has length 0"},
		{"AC accepting without a transfer syntax", TypeAssociateAC, cat(fixed, ctx, wireItem(0x21, []byte{1, 0, 0, 0}), ui), "accepted transfer syntax UID has length 0"},
		{"RJ of 3 bytes", TypeAssociateRJ, []byte{0, 1, 1}, "want 4"},
		{"A-ABORT of 5 bytes", TypeAbort, []byte{0, 0, 0, 0, 0}, "want 4"},
		{"A-RELEASE-RQ of 2 bytes", TypeReleaseRQ, []byte{0, 0}, "want 4"},
		{"A-RELEASE-RP of 6 bytes", TypeReleaseRP, make([]byte, 6), "want 4"},
		{"empty P-DATA-TF", TypePDataTF, nil, "without any PDV"},
		{"PDV shorter than its header", TypePDataTF, cat(be32(1), []byte{1, 3}), "does not fit"},
		{"PDV longer than the PDU", TypePDataTF, cat(be32(9), []byte{1, 3, 0}), "does not fit"},
		{"unknown PDU type", 0x09, make([]byte, 4), "unknown PDU type 0x09"},
	} {
		_, err := Decode(c.typ, c.body)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrMalformed mentioning %q", c.name, err, c.want)
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Read refuses a PDU longer than the limit from its header alone, before reading or allocating
// the body, and reports a body cut short as io.ErrUnexpectedEOF.
func TestReadLimitsAndTruncation(t *testing.T) {
	huge := pduBytes(TypePDataTF, nil)
	binary.BigEndian.PutUint32(huge[2:], 0xFFFFFFF0)
	cr := &countingReader{r: io.MultiReader(bytes.NewReader(huge), strings.NewReader(strings.Repeat("x", 1<<16)))}
	if _, err := Read(cr, 1<<20); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "limit is 1048576") {
		t.Fatalf("oversized PDU: %v", err)
	}
	if cr.n > HeaderLen {
		t.Fatalf("read %d bytes of a PDU refused by its header", cr.n)
	}
	cut := associateRQBytes("A", "B")
	if _, err := Read(bytes.NewReader(cut[:len(cut)-3]), 1<<16); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated body: %v", err)
	}
	if _, err := Read(bytes.NewReader(cut[:3]), 1<<16); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated header: %v", err)
	}
	if _, err := Read(bytes.NewReader(nil), 1<<16); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
}

func TestRejectAndAbortTexts(t *testing.T) {
	for _, c := range []struct {
		rj   AssociateRJ
		want string
	}{
		{AssociateRJ{RejectPermanent, RejectSourceServiceUser, RejectReasonCalledAENotRecognized}, "permanent, service user: called AE title not recognized"},
		{AssociateRJ{RejectPermanent, RejectSourceServiceUser, RejectReasonCallingAENotRecognized}, "permanent, service user: calling AE title not recognized"},
		{AssociateRJ{RejectPermanent, RejectSourceServiceProviderACSE, RejectReasonProtocolVersionNotSupported}, "permanent, service provider (ACSE): protocol version not supported"},
		{AssociateRJ{RejectTransient, RejectSourceServiceProviderPresentation, RejectReasonLocalLimitExceeded}, "transient, service provider (presentation): local limit exceeded"},
		// The same reason number means different things per source.
		{AssociateRJ{RejectTransient, RejectSourceServiceProviderPresentation, RejectReasonTemporaryCongestion}, "transient, service provider (presentation): temporary congestion"},
		{AssociateRJ{3, 9, 9}, "result 3, source 9 reason 9"},
	} {
		if got := c.rj.Error(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.rj, got, c.want)
		}
	}
	if s := AbortSourceServiceProvider.String() + "/" + AbortReasonUnrecognizedParameter.String(); s != "service provider/unrecognized PDU parameter" {
		t.Errorf("abort texts %q", s)
	}
}
