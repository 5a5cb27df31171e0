package pdu

import (
	"bytes"
	"reflect"
	"testing"
)

func seedPDUs() [][]byte {
	rq := &AssociateRQ{CalledAE: "DPERSONA", CallingAE: "CT1", ApplicationContext: ApplicationContextName,
		PresentationContexts: []PresentationContextRQ{
			{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
			{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}},
		},
		UserInfo: UserInfo{MaxPDULength: 16384, ImplementationClassUID: "1.2.276.0.7230010.3.0.3.6.7", ImplementationVersionName: "OFFIS_DCMTK_367"}}
	ac := &AssociateAC{CalledAE: "DPERSONA", CallingAE: "CT1", ApplicationContext: ApplicationContextName,
		PresentationContexts: []PresentationContextAC{{ID: 1, Result: ResultAcceptance, TransferSyntax: "1.2.840.10008.1.2"}, {ID: 3, Result: ResultAbstractSyntaxNotSupported}},
		UserInfo:             UserInfo{MaxPDULength: 262144, ImplementationClassUID: "2.25.1"}}
	pd := &PDataTF{PDVs: []PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{0, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4}}, {ContextID: 1, Data: []byte("dataset")}}}
	return [][]byte{rq.Encode(), ac.Encode(), pd.Encode(), (&AssociateRJ{Result: 1, Source: 1, Reason: 7}).Encode(), (&Abort{Source: 2, Reason: 1}).Encode(), ReleaseRQ{}.Encode(), ReleaseRP{}.Encode()}
}

// FuzzRead: any byte stream decodes to a PDU or an error, never a panic or an allocation beyond
// the limit; what decodes re-encodes to something that decodes to the same value.
func FuzzRead(f *testing.F) {
	for _, s := range seedPDUs() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Read(bytes.NewReader(b), 1<<16)
		if err != nil {
			return
		}
		var again any
		switch p := v.(type) {
		case *AssociateRQ:
			again, err = Read(bytes.NewReader(p.Encode()), 1<<20)
		case *AssociateAC:
			again, err = Read(bytes.NewReader(p.Encode()), 1<<20)
		case *PDataTF:
			again, err = Read(bytes.NewReader(p.Encode()), 1<<20)
		default:
			return
		}
		if err != nil {
			t.Fatalf("re-encoded %T does not decode: %v", v, err)
		}
		if !reflect.DeepEqual(normalise(v), normalise(again)) {
			t.Fatalf("round trip changed the PDU:\n%#v\n%#v", v, again)
		}
	})
}

// normalise clears what encoding legitimately changes (padding-trimmed AE titles, defaults).
func normalise(v any) any {
	switch p := v.(type) {
	case *AssociateRQ:
		c := *p
		c.ProtocolVersion = 0
		if len(c.CalledAE) > 16 {
			c.CalledAE = c.CalledAE[:16]
		}
		return c
	case *AssociateAC:
		c := *p
		c.ProtocolVersion = 0
		for i := range c.PresentationContexts {
			if c.PresentationContexts[i].Result != ResultAcceptance {
				c.PresentationContexts[i].TransferSyntax = ""
			}
		}
		return c
	}
	return v
}

func TestRoundTripSeeds(t *testing.T) {
	for _, s := range seedPDUs() {
		v, err := Read(bytes.NewReader(s), 1<<16)
		if err != nil {
			t.Fatalf("seed %x: %v", s[:1], err)
		}
		if rq, ok := v.(*AssociateRQ); ok && (rq.CalledAE != "DPERSONA" || len(rq.PresentationContexts) != 2 || rq.UserInfo.MaxPDULength != 16384) {
			t.Fatalf("decoded RQ %+v", rq)
		}
	}
	if _, err := Read(bytes.NewReader([]byte{4, 0, 0, 0x10, 0, 0}), 1024); err == nil {
		t.Fatal("a P-DATA-TF declaring 1 MiB was read with a 1 KiB limit")
	}
}

// Found by FuzzRead: an A-ASSOCIATE-AC without application context or user information was
// accepted.
func TestAssociateACRequiresMandatoryItems(t *testing.T) {
	body := make([]byte, 68)
	body[1] = 1
	if _, err := DecodeAssociateAC(body); err == nil {
		t.Fatal("A-ASSOCIATE-AC without items decoded")
	}
}
