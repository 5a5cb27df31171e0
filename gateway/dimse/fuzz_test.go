package dimse

import "testing"

// FuzzDecode: arbitrary command bytes decode or fail cleanly; a decoded command re-encodes to one
// that decodes to the same fields.
func FuzzDecode(f *testing.F) {
	for _, c := range []*Command{
		{CommandField: CEchoRQ, MessageID: 1, AffectedSOPClassUID: VerificationSOPClass, CommandDataSetType: NoDataSet},
		{CommandField: CStoreRQ, MessageID: 7, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: DataSetPresent, MoveOriginatorAE: "MOVER", MoveOriginatorMessageID: 3},
		{CommandField: CStoreRSP, MessageIDBeingRespondedTo: 7, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", AffectedSOPInstanceUID: "1.2.3.4", Status: StatusOutOfResources, ErrorComment: "disk full", CommandDataSetType: NoDataSet},
	} {
		f.Add(c.Encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		d, err := Decode(c.Encode())
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if c.CommandField != d.CommandField || c.AffectedSOPClassUID != d.AffectedSOPClassUID || c.AffectedSOPInstanceUID != d.AffectedSOPInstanceUID || c.HasDataSet() != d.HasDataSet() {
			t.Fatalf("round trip changed the command: %v -> %v", c, d)
		}
	})
}

func TestEncodeDecode(t *testing.T) {
	c := &Command{CommandField: CStoreRSP, MessageIDBeingRespondedTo: 9, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", AffectedSOPInstanceUID: "1.2.3", Status: StatusDataSetDoesNotMatchClass, ErrorComment: "mismatch", CommandDataSetType: NoDataSet}
	d, err := Decode(c.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if d.MessageIDBeingRespondedTo != 9 || d.Status != StatusDataSetDoesNotMatchClass || d.ErrorComment != "mismatch" || d.HasDataSet() || d.AffectedSOPInstanceUID != "1.2.3" {
		t.Fatalf("decoded %+v", d)
	}
	// The group length must equal the bytes that follow it (dcmtk checks it).
	b := c.Encode()
	if gl := int(b[8]) | int(b[9])<<8 | int(b[10])<<16 | int(b[11])<<24; gl != len(b)-12 {
		t.Fatalf("group length %d, %d bytes follow", gl, len(b)-12)
	}
	if _, err := Decode([]byte{0, 0, 0x00, 0x01, 2, 0, 0, 0, 1, 0}); err == nil {
		t.Fatal("a command without CommandDataSetType decoded")
	}
	if _, err := Decode([]byte{8, 0, 0x18, 0, 2, 0, 0, 0, 1, 0}); err == nil {
		t.Fatal("an element outside group 0000 decoded")
	}
}

// Found by FuzzDecode: a response announcing a data set lost it on re-encoding.
func TestResponseWithDataSetRoundTrips(t *testing.T) {
	c := &Command{CommandField: 0x8020, MessageIDBeingRespondedTo: 1, Status: 0xFF00, CommandDataSetType: DataSetPresent}
	d, err := Decode(c.Encode())
	if err != nil || !d.HasDataSet() {
		t.Fatalf("decoded %v, %v", d, err)
	}
}
