package gateway

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/dicomio"
	"dpersona/internal/testutil"
)

// storescu (dcmtk) sends files compressed by real encoders, each offering only its own transfer
// syntax as a hospital archive forwards them: the gateway accepts them by default, stores the data
// set byte for byte as received (meta group naming the same transfer syntax) and the stored files
// load for inference (issue 14 item 5; before, storescu failed with "No presentation context").
func TestCompressedTransferSyntaxesStoredAsReceived(t *testing.T) {
	testutil.RequireTool(t, "storescu")
	testutil.RequireTool(t, dicomio.DecoderCommand)
	g := startGateway(t, gatewayOptions{})
	for _, c := range []struct{ codec, propose string }{
		{"jpeg-lossless-sv1", "-xs"}, {"jpeg-ls", "-xt"}, {"rle", "-xr"}, {"jpeg2000", "-xv"}, {"jpeg-baseline", "-xy"},
	} {
		codec := c.codec
		t.Run(codec, func(t *testing.T) {
			files := dicomFiles(t, testutil.Testdata("dicom", "compressed", codec))
			// -R: propose only the files' SOP classes; -x?: with the files' compressed transfer
			// syntax first (storescu adds the uncompressed ones after it).
			out, err := runTool(t, 30*time.Second, "storescu", append([]string{"-v", "-R", c.propose, "-aet", "ARCHIVE", "-aec", "DPERSONA",
				"127.0.0.1", fmt.Sprint(g.port)}, files...)...)
			if err != nil || strings.Count(out, "Received Store Response (Success)") != len(files) {
				t.Fatalf("storescu %s: %v\n%s", codec, err, out)
			}
			var stored []string
			for _, f := range files {
				meta, inst, sent := readFixture(t, f)
				path := filepath.Join(g.store.StudyDir("DPERSONA", inst.StudyInstanceUID), inst.SeriesInstanceUID, inst.SOPInstanceUID+".dcm")
				gotMeta, _, got := readFixture(t, path)
				if gotMeta.TransferSyntaxUID != meta.TransferSyntaxUID {
					t.Fatalf("%s stored with transfer syntax %s, sent as %s", f, gotMeta.TransferSyntaxUID, meta.TransferSyntaxUID)
				}
				if !bytes.Equal(got, sent) {
					t.Fatalf("%s: stored data set (%d bytes) differs from the one sent (%d bytes)", f, len(got), len(sent))
				}
				stored = append(stored, path)
			}
			s, err := dicomio.LoadSeries(stored)
			if err != nil || len(s.Slices) != len(files) {
				t.Fatalf("stored %s files do not load for inference: %v", codec, err)
			}
		})
	}
}
