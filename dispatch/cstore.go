package dispatch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"dpersona/gateway/part10"
	"dpersona/gateway/pdu"
	"dpersona/gateway/scu"
	"dpersona/gateway/ul"
	"dpersona/internal/dicomstd"
)

// CStoreExporter delivers files with C-STORE over one association per job, using the project's
// own upper layer and DIMSE (gateway/scu). For every SOP class it proposes explicit and implicit
// VR little endian in separate presentation contexts, so a peer may accept either; explicit
// files go as implicit when that is all the peer accepted.
type CStoreExporter struct {
	Addr      string // host:port
	CalledAE  string // the destination's AE title
	CallingAE string // ours
	// DialTimeout and ResponseTimeout default to 10s and 60s.
	DialTimeout     time.Duration
	ResponseTimeout time.Duration
}

// NewExporter builds the exporter of a destination by its kind (C-STORE or STOW-RS);
// defaultCallingAE is our AE title towards a C-STORE destination that names none.
func NewExporter(d Destination, defaultCallingAE string) Exporter {
	if d.Kind == KindSTOW {
		return &STOWExporter{URL: d.URL, BearerToken: d.BearerToken}
	}
	return NewCStoreExporter(d, defaultCallingAE)
}

// NewCStoreExporter builds the exporter for a "dicom" destination.
func NewCStoreExporter(d Destination, defaultCallingAE string) *CStoreExporter {
	calling := d.CallingAE
	if calling == "" {
		calling = defaultCallingAE
	}
	return &CStoreExporter{Addr: net.JoinHostPort(d.Host, strconv.Itoa(d.Port)), CalledAE: d.AETitle, CallingAE: calling}
}

type parsedFile struct {
	meta part10.Meta
	body []byte // the data set after the meta group
}

// Export implements Exporter.
func (e *CStoreExporter) Export(ctx context.Context, files []ExportFile) ([]FileStatus, error) {
	out := make([]FileStatus, len(files))
	parsed := make([]*parsedFile, len(files))
	classes := map[string]bool{}
	var order []string
	for i, f := range files {
		br := bufio.NewReader(bytes.NewReader(f.Data))
		m, off, err := part10.ReadMeta(br)
		if err != nil {
			out[i] = FileStatus{Err: Permanentf("SEG %s is not a Part-10 file: %w", f.SOPInstanceUID, err)}
			continue
		}
		if m.MediaStorageSOPInstanceUID != f.SOPInstanceUID && f.SOPInstanceUID != "" {
			out[i] = FileStatus{Err: Permanentf("SEG file holds SOP instance %s, the job says %s", m.MediaStorageSOPInstanceUID, f.SOPInstanceUID)}
			continue
		}
		parsed[i] = &parsedFile{meta: m, body: f.Data[off:]}
		if !classes[m.MediaStorageSOPClassUID] {
			classes[m.MediaStorageSOPClassUID] = true
			order = append(order, m.MediaStorageSOPClassUID)
		}
	}
	if len(order) == 0 {
		return out, nil
	}
	// One context per (class, transfer syntax): the peer can accept both encodings, and the
	// deflated one too for classes sent deflated (inflated when the peer does not take it).
	deflated := map[string]bool{}
	for _, p := range parsed {
		if p != nil && p.meta.TransferSyntaxUID == dicomstd.DeflatedExplicitVRLittleEndian {
			deflated[p.meta.MediaStorageSOPClassUID] = true
		}
	}
	var props []scu.Proposal
	for _, c := range order {
		if deflated[c] {
			props = append(props, scu.Proposal{AbstractSyntax: c, TransferSyntaxes: []string{dicomstd.DeflatedExplicitVRLittleEndian}})
		}
		props = append(props,
			scu.Proposal{AbstractSyntax: c, TransferSyntaxes: []string{part10.ExplicitVRLittleEndian}},
			scu.Proposal{AbstractSyntax: c, TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}})
	}
	client, err := scu.Dial(ctx, e.Addr, scu.Options{CallingAE: e.CallingAE, CalledAE: e.CalledAE,
		DialTimeout: e.DialTimeout, ResponseTimeout: e.ResponseTimeout}, props)
	if err != nil {
		return nil, classifyAssociationError(e, err)
	}
	released := false
	defer func() {
		if !released {
			client.Abort()
		}
	}()
	accepted := map[[2]string]bool{}
	for _, pc := range client.Association().Contexts() {
		if pc.Accepted {
			accepted[[2]string{pc.AbstractSyntax, pc.TransferSyntax}] = true
		}
	}
	broken := error(nil) // set when the association died mid-way: the rest is retried later
	for i, p := range parsed {
		if p == nil {
			continue
		}
		if broken != nil {
			out[i] = FileStatus{Err: broken}
			continue
		}
		class, ts, body := p.meta.MediaStorageSOPClassUID, p.meta.TransferSyntaxUID, p.body
		if ts == dicomstd.DeflatedExplicitVRLittleEndian && !accepted[[2]string{class, ts}] {
			plain, err := dicomstd.InflateFile(files[i].Data)
			var off int64
			if err == nil {
				_, off, err = part10.ReadMeta(bufio.NewReader(bytes.NewReader(plain)))
			}
			if err != nil {
				out[i] = FileStatus{Err: Permanentf("%s: the destination does not take deflated files and this one cannot be inflated: %w", files[i].SOPInstanceUID, err)}
				continue
			}
			ts, body = part10.ExplicitVRLittleEndian, plain[off:]
		}
		if !accepted[[2]string{class, ts}] {
			switch {
			case ts == part10.ExplicitVRLittleEndian && accepted[[2]string{class, part10.ImplicitVRLittleEndian}]:
				conv, err := ExplicitToImplicitLE(body)
				if err != nil {
					out[i] = FileStatus{Err: Permanentf("SEG %s: the destination accepts only implicit VR little endian and the file cannot be converted: %w", files[i].SOPInstanceUID, err)}
					continue
				}
				body, ts = conv, part10.ImplicitVRLittleEndian
			default:
				out[i] = FileStatus{Err: Permanentf("%s@%s accepted SOP class %s in none of the transfer syntaxes this file can be sent in (%s)", e.CalledAE, e.Addr, class, ts)}
				continue
			}
		}
		res, err := client.Store(ctx, class, p.meta.MediaStorageSOPInstanceUID, ts, bytes.NewReader(body), int64(len(body)))
		var se *scu.StatusError
		switch {
		case err == nil:
			out[i] = FileStatus{Status: fmt.Sprintf("0x%04X", res.Status)}
		case errors.As(err, &se):
			status := fmt.Sprintf("0x%04X", se.Status)
			ferr := fmt.Errorf("%s@%s: %w", e.CalledAE, e.Addr, err)
			if !se.Status.Transient() { // 0xA9xx, 0xCxxx, 0x0122, ...: the file itself is refused
				ferr = Permanent(ferr)
			}
			out[i] = FileStatus{Status: status, Err: ferr}
		default:
			broken = fmt.Errorf("%s@%s: association lost: %w", e.CalledAE, e.Addr, err)
			out[i] = FileStatus{Err: broken}
		}
	}
	if broken == nil {
		// A failed release does not undo stored files; their statuses stand.
		client.Release()
		released = true
	}
	return out, nil
}

// classifyAssociationError marks rejections that retrying cannot fix as permanent: a permanent
// A-ASSOCIATE-RJ (e.g. called AE title not recognised, calling AE not allowed). A transient
// rejection (too many associations), refused connections and timeouts are retried.
func classifyAssociationError(e *CStoreExporter, err error) error {
	var rj pdu.AssociateRJ
	var rjp *pdu.AssociateRJ
	switch {
	case errors.As(err, &rj):
	case errors.As(err, &rjp):
		rj = *rjp
	default:
		if errors.Is(err, ul.ErrRejected) {
			return Permanentf("%s@%s rejected the association: %w", e.CalledAE, e.Addr, err)
		}
		return fmt.Errorf("%s@%s: %w", e.CalledAE, e.Addr, err)
	}
	if rj.Result == pdu.RejectTransient {
		return fmt.Errorf("%s@%s rejected the association for now: %w", e.CalledAE, e.Addr, err)
	}
	return Permanentf("%s@%s rejected the association (calling AE %s): %w", e.CalledAE, e.Addr, e.CallingAE, err)
}
