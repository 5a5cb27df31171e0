package dicomstd

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidUIDAndSafePathUID(t *testing.T) {
	long := "1." + strings.Repeat("2", 62) // 64 characters
	for _, c := range []struct {
		uid         string
		valid, safe bool
	}{
		{"1.2.840.10008.1.2.1", true, true},
		{"1", true, true},
		{"0", true, true},
		{"1.0.2", true, true},
		{long, true, true},
		{long + "3", false, false},
		{"1.02.3", false, true}, // leading zero: not a UID, but harmless as a file name
		{"01.2", false, true},
		{"", false, false},
		{".", false, false},
		{"..", false, false},
		{"1..2", false, false},
		{".1", false, false},
		{"1.", false, false},
		{"1.2.a", false, false},
		{"../x", false, false},
		{"1/2", false, false},
		{"1.2 ", false, false},
		{"1.2\x00", false, false},
	} {
		if got := ValidUID(c.uid); got != c.valid {
			t.Errorf("ValidUID(%q) = %v, want %v", c.uid, got, c.valid)
		}
		if got := SafePathUID(c.uid); got != c.safe {
			t.Errorf("SafePathUID(%q) = %v, want %v", c.uid, got, c.safe)
		}
	}
}

func TestNewUID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		u := NewUID()
		if !ValidUID(u) || !strings.HasPrefix(u, "2.25.") || len(u) > 44 || seen[u] {
			t.Fatalf("NewUID() = %q (valid %v, seen %v)", u, ValidUID(u), seen[u])
		}
		seen[u] = true
	}
	if !ValidUID(ImplementationClassUID) || len(ImplementationVersionName) > 16 {
		t.Fatalf("our implementation identity is invalid: %q %q", ImplementationClassUID, ImplementationVersionName)
	}
}

// NameUID must never change its formula: stable series and lesion tracking UIDs of earlier
// releases depend on it. The expected values were computed by the formula as first written in
// pipeline (sha256 of the NUL-joined name, first 16 bytes, decimal, under 2.25).
func TestNameUIDIsStable(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{NameUID("dpersona-output-series/v1", "1.2.3", "1.2.3.4", "raters", "default"), nameUIDReference("dpersona-output-series/v1\x001.2.3\x001.2.3.4\x00raters\x00default")},
		{NameUID("dpersona-lesion/v1", "sr", "1.2.3.5", "1"), nameUIDReference("dpersona-lesion/v1\x00sr\x001.2.3.5\x001")},
		{NameUID("x"), "2.25.60402440854088184450321736577596535541"}, // computed independently with Python hashlib
	} {
		if c.got != c.want || !ValidUID(c.got) {
			t.Errorf("NameUID = %q, want %q", c.got, c.want)
		}
	}
	if NameUID("a", "bc") == NameUID("ab", "c") {
		t.Error("the parts are not separated")
	}
}

func nameUIDReference(name string) string {
	h := sha256.Sum256([]byte(name))
	return "2.25." + new(big.Int).SetBytes(h[:16]).String()
}

func TestCheckAETitle(t *testing.T) {
	for ae, want := range map[string]string{
		"PACS":                  "",
		"A":                     "",
		"ORTHANC_01-X y":        "",
		"SIXTEEN_CHARS_AE":      "",
		" PADDED ":              "", // leading/trailing spaces are not significant, but allowed
		"":                      "empty",
		"                ":      "empty",
		"SEVENTEEN_CHARS_A":     "longer than 16",
		`BACK\SLASH`:            "not allowed",
		"TAB\tAE":               "not allowed",
		"NEW\nLINE":             "not allowed",
		"CAF\u00c9":             "not allowed",
		"WAY_TOO_LONG_AE_TITLE": "longer than 16",
	} {
		err := CheckAETitle(ae)
		switch {
		case want == "" && err != nil:
			t.Errorf("CheckAETitle(%q) = %v, want nil", ae, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("CheckAETitle(%q) = %v, want an error mentioning %q", ae, err, want)
		}
	}
	if got := TrimAETitle("  PACS \x00\x00"); got != "PACS" {
		t.Errorf("TrimAETitle = %q", got)
	}
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]Address{
		"ORTHANC@127.0.0.1:4242":  {"ORTHANC", "127.0.0.1", 4242},
		"PACS@[::1]:104":          {"PACS", "::1", 104},
		"PACS@pacs.example.org:1": {"PACS", "pacs.example.org", 1},
		"A@B@host:104":            {"A@B", "host", 104}, // the last @ separates
	} {
		got, err := ParseAddress(in)
		if err != nil || got != want {
			t.Errorf("ParseAddress(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if a, _ := ParseAddress("PACS@[::1]:104"); a.HostPort() != "[::1]:104" || a.String() != "PACS@[::1]:104" {
		t.Errorf("IPv6 host:port = %q, %q", a.HostPort(), a.String())
	}
	for in, want := range map[string]string{
		"127.0.0.1:4242":                 "want AET@HOST:PORT",
		"@host:104":                      "want AET@HOST:PORT",
		"PACS@host":                      "no port",
		"PACS@:104":                      "host is empty",
		"PACS@host:0":                    "not in 1..65535",
		"PACS@host:99999":                "not in 1..65535",
		"PACS@host:http":                 "not in 1..65535",
		"WAY_TOO_LONG_AE_TITLE@host:104": "longer than 16",
		`BAD\AE@host:104`:                "not allowed",
	} {
		if _, err := ParseAddress(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseAddress(%q) = %v, want an error mentioning %q", in, err, want)
		}
	}
}

func TestLongVR(t *testing.T) {
	for _, vr := range []string{"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"} {
		if !LongVR(vr) {
			t.Errorf("LongVR(%s) = false", vr)
		}
	}
	for _, vr := range []string{"AE", "CS", "DS", "LO", "SH", "UI", "UL", "US", "AT", "FD", "ob", ""} {
		if LongVR(vr) {
			t.Errorf("LongVR(%q) = true", vr)
		}
	}
}

// TestEncodeFileMeta checks the layout byte by byte: group length first and equal to the rest of
// the group, ascending elements, even lengths, UIDs padded with NUL and text with a space.
func TestEncodeFileMeta(t *testing.T) {
	b := EncodeFileMeta(FileMeta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", MediaStorageSOPInstanceUID: "1.2.3",
		TransferSyntaxUID: ExplicitVRLittleEndian, SourceAETitle: "CT1"})
	if !bytes.Equal(b[:128], make([]byte, 128)) || string(b[128:132]) != "DICM" {
		t.Fatal("no zero preamble and DICM marker")
	}
	r := b[132:]
	if string(r[4:6]) != "UL" || binary.LittleEndian.Uint32(r[8:12]) != uint32(len(r)-12) {
		t.Fatalf("group length element %x does not cover the %d bytes that follow", r[:12], len(r)-12)
	}
	r = r[12:]
	type el struct {
		elem  uint16
		vr    string
		value string
	}
	var got []el
	for len(r) > 0 {
		elem, vr := binary.LittleEndian.Uint16(r[2:]), string(r[4:6])
		var n, hdr int
		if LongVR(vr) {
			n, hdr = int(binary.LittleEndian.Uint32(r[8:])), 12
		} else {
			n, hdr = int(binary.LittleEndian.Uint16(r[6:])), 8
		}
		if binary.LittleEndian.Uint16(r) != 0x0002 || n%2 != 0 {
			t.Fatalf("element (%04x,%04x) has odd length %d or is outside group 0002", binary.LittleEndian.Uint16(r), elem, n)
		}
		got = append(got, el{elem, vr, string(r[hdr : hdr+n])})
		r = r[hdr+n:]
	}
	want := []el{
		{0x0001, "OB", "\x00\x01"},
		{0x0002, "UI", "1.2.840.10008.5.1.4.1.1.2\x00"},
		{0x0003, "UI", "1.2.3\x00"},
		{0x0010, "UI", ExplicitVRLittleEndian + "\x00"},
		{0x0012, "UI", padUID(ImplementationClassUID)},
		{0x0013, "SH", ImplementationVersionName},
		{0x0016, "AE", "CT1 "},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d elements %v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("element %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

func padUID(s string) string {
	if len(s)%2 == 1 {
		return s + "\x00"
	}
	return s
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "study.json")
	if err := WriteFileAtomic(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "two" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	// A failing writer leaves the old content and no temporary file behind.
	boom := errors.New("encoder failed")
	err := WriteAtomic(path, 0o644, func(w io.Writer) error {
		bufio.NewWriter(w).WriteString("partial")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the writer's error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Fatalf("a failed write changed the file to %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("directory holds %d entries after a failed write, want 1", len(ents))
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("SyncDir of a missing directory succeeded")
	}
}

func TestReadFileMeta(t *testing.T) {
	m := FileMeta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.66.4", MediaStorageSOPInstanceUID: "1.2.3",
		TransferSyntaxUID: DeflatedExplicitVRLittleEndian, ImplementationClassUID: "2.25.1", ImplementationVersionName: "X", SourceAETitle: "CT1"}
	b := append(EncodeFileMeta(m), 0x08, 0x00, 0x16, 0x00, 'U', 'I', 0, 0) // the data set's first element
	got, off, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(b)))
	if err != nil || got != m || off != int64(len(b)-8) {
		t.Fatalf("round trip: %+v at %d, %v; want %+v at %d", got, off, err, m, len(b)-8)
	}
	if _, _, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(make([]byte, 200)))); !errors.Is(err, ErrNotPart10) {
		t.Errorf("no DICM marker: %v", err)
	}
	noTS := EncodeFileMeta(FileMeta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1.3"})
	if _, _, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(noTS))); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "TransferSyntaxUID") {
		t.Errorf("no transfer syntax: %v", err)
	}
	huge := append(EncodeFileMeta(m)[:132:132], 0x02, 0x00, 0x01, 0x00, 'O', 'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F)
	if _, _, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(huge))); !errors.Is(err, ErrMalformed) {
		t.Errorf("a 2 GB meta element: %v", err)
	}
}
