package store

import "testing"

func TestAEDirNameIsReversibleAndSafe(t *testing.T) {
	for _, ae := range []string{"DPERSONA", "CT_SCANNER-1", "A B", "../..", ".", "..", "x/y", "50%", "lower"} {
		d := AEDirName(ae)
		if d == "." || d == ".." || d == "" {
			t.Fatalf("AEDirName(%q) = %q", ae, d)
		}
		for _, c := range d {
			if c == '/' || c == '.' {
				t.Fatalf("AEDirName(%q) = %q contains %q", ae, d, c)
			}
		}
		back, err := AEFromDirName(d)
		if err != nil || back != ae {
			t.Fatalf("AEFromDirName(%q) = %q, %v; want %q", d, back, err, ae)
		}
	}
	if AEDirName("A B") == AEDirName("A_B") {
		t.Fatal("distinct AE titles share a directory")
	}
	if _, err := AEFromDirName("bad%Z"); err == nil {
		t.Fatal("truncated escape decoded")
	}
}

// BenchmarkReserve is the cost the disk watermark adds to each 256 KiB write of an instance: one
// statfs and two lock round trips (reserve, release).
func BenchmarkReserve(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	s.SetMinFreeBytes(1 << 20)
	for i := 0; i < b.N; i++ {
		n, err := s.reserve(writeBufferSize)
		if err != nil {
			b.Fatal(err)
		}
		s.release(n)
	}
}
