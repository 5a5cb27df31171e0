package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"dpersona/gateway/scu"
)

func init() { registerCommand(newSendCommand) }

type sendOptions struct {
	to           string
	callingAE    string
	associations int
	timeout      time.Duration
	tlsFlags     scuTLSFlags
	tls          *tls.Config // from tlsFlags, by runSend
}

func newSendCommand() *cobra.Command {
	var opts sendOptions
	cmd := &cobra.Command{
		Use:   "send --to AET@HOST:PORT PATH...",
		Short: "Send DICOM files or folders (recursively) to a peer with C-STORE",
		Long: `send walks the given files and folders, keeps the DICOM Part-10 files (others are counted as
skipped), proposes exactly their SOP classes and transfer syntaxes, and sends them over one or
more parallel associations, with a progress line on stderr and a summary at the end. It exits
non-zero when any instance was not stored; each failure is listed with the peer's status.`,
		Example: "  dpersona send --to DPERSONA@127.0.0.1:11112 testdata/dicom/lidc-ct-0005\n  dpersona send --to PACS@10.0.0.5:104 --associations 4 /data/export",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSend(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), opts, args)
		},
	}
	cmd.Flags().StringVar(&opts.to, "to", "", "destination AET@HOST:PORT (required)")
	cmd.Flags().StringVar(&opts.callingAE, "aet", "DPERSONA", "calling AE title")
	cmd.Flags().IntVar(&opts.associations, "associations", 1, "parallel associations")
	cmd.Flags().DurationVar(&opts.timeout, "timeout", 60*time.Second, "deadline of each network step (connect, response)")
	opts.tlsFlags.add(cmd)
	cmd.MarkFlagRequired("to")
	return cmd
}

type sendFile struct {
	path     string
	class    string
	ts       string
	instance string
	size     int64
}

// collectFiles walks paths and keeps the Part-10 files, sorted by path.
func collectFiles(paths []string) (files []sendFile, skipped []string, err error) {
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			m, err := scu.ReadMeta(p)
			if err != nil {
				skipped = append(skipped, p)
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, sendFile{path: p, class: m.MediaStorageSOPClassUID, ts: m.TransferSyntaxUID, instance: m.MediaStorageSOPInstanceUID, size: info.Size()})
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	return files, skipped, nil
}

type sendFailure struct {
	path string
	err  error
}

func runSend(ctx context.Context, stdout, stderr io.Writer, opts sendOptions, paths []string) error {
	ae, addr, err := parseDestination(opts.to)
	if err != nil {
		return err
	}
	if opts.associations < 1 {
		return fmt.Errorf("--associations must be at least 1")
	}
	if opts.tls, err = opts.tlsFlags.config(); err != nil {
		return err
	}
	files, skipped, err := collectFiles(paths)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no DICOM Part-10 files under %s (%d other files skipped)", strings.Join(paths, ", "), len(skipped))
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	// Round-robin the files over the associations.
	n := min(opts.associations, len(files))
	groups := make([][]sendFile, n)
	for i, f := range files {
		groups[i%n] = append(groups[i%n], f)
	}
	var done, sentBytes atomic.Int64
	var mu sync.Mutex
	var failures []sendFailure
	fail := func(p string, err error) {
		mu.Lock()
		failures = append(failures, sendFailure{p, err})
		mu.Unlock()
	}
	start := time.Now()
	// The live line rewrites itself with \r on a terminal; elsewhere (logs) a line every 5 s.
	interactive := isTerminal(stderr)
	lastLine := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case now := <-t.C:
				switch {
				case interactive:
					printProgress(stderr, done.Load(), int64(len(files)), sentBytes.Load(), total, time.Since(start), "\r", "")
				case now.Sub(lastLine) >= 5*time.Second:
					lastLine = now
					printProgress(stderr, done.Load(), int64(len(files)), sentBytes.Load(), total, time.Since(start), "", "\n")
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func(g []sendFile) {
			defer wg.Done()
			sendGroup(ctx, ae, addr, opts, g, func(f sendFile, err error) {
				done.Add(1)
				if err != nil {
					fail(f.path, err)
				} else {
					sentBytes.Add(f.size)
				}
			})
		}(g)
	}
	wg.Wait()
	close(stopProgress)
	<-progressDone
	elapsed := time.Since(start)
	if interactive {
		printProgress(stderr, done.Load(), int64(len(files)), sentBytes.Load(), total, elapsed, "\r", "\n")
	}
	ok := len(files) - len(failures)
	fmt.Fprintf(stdout, "sent %d of %d instances (%.1f MB) to %s in %v over %d association(s): %.1f instances/s, %.1f MB/s; %d failed, %d non-DICOM files skipped\n",
		ok, len(files), float64(sentBytes.Load())/1e6, opts.to, elapsed.Round(time.Millisecond), n,
		float64(ok)/elapsed.Seconds(), float64(sentBytes.Load())/1e6/elapsed.Seconds(), len(failures), len(skipped))
	if len(failures) > 0 {
		sort.Slice(failures, func(i, j int) bool { return failures[i].path < failures[j].path })
		for _, f := range failures {
			fmt.Fprintf(stdout, "  FAILED %s: %v\n", f.path, f.err)
		}
		return fmt.Errorf("%d of %d instances were not stored", len(failures), len(files))
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func printProgress(w io.Writer, done, total, bytes, totalBytes int64, elapsed time.Duration, lead, end string) {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(bytes) / 1e6 / s
	}
	fmt.Fprintf(w, "%ssending: %d/%d instances, %.1f/%.1f MB, %.1f MB/s %s", lead, done, total, float64(bytes)/1e6, float64(totalBytes)/1e6, rate, end)
}

// sendGroup sends files over as few associations as their presentation contexts need (at most
// 128 contexts each), reporting each file's outcome.
func sendGroup(ctx context.Context, ae, addr string, opts sendOptions, files []sendFile, report func(sendFile, error)) {
	for len(files) > 0 {
		batch, rest := contextBatch(files)
		files = rest
		paths := make([]string, len(batch))
		for i, f := range batch {
			paths[i] = f.path
		}
		props, err := scu.ProposalsForFiles(paths)
		if err != nil {
			for _, f := range batch {
				report(f, err)
			}
			continue
		}
		c, err := scu.Dial(ctx, addr, scu.Options{CallingAE: opts.callingAE, CalledAE: ae, DialTimeout: opts.timeout, ResponseTimeout: opts.timeout, TLS: opts.tls}, props)
		if err != nil {
			err = explainDialError(err)
			for _, f := range batch {
				report(f, err)
			}
			continue
		}
		broken := error(nil)
		for _, f := range batch {
			if broken != nil {
				report(f, broken)
				continue
			}
			_, err := c.StoreFile(ctx, f.path)
			report(f, err)
			if err != nil {
				var status *scu.StatusError
				if !errors.As(err, &status) && !errors.Is(err, scu.ErrNoContext) {
					broken = fmt.Errorf("association lost: %w", err)
				}
			}
		}
		if broken != nil {
			c.Abort()
		} else {
			c.Release()
		}
	}
}

// contextBatch takes the longest prefix of files whose (class, transfer syntax) pairs, plus
// Verification, fit in one association.
func contextBatch(files []sendFile) ([]sendFile, []sendFile) {
	seen := map[string]bool{}
	for i, f := range files {
		k := f.class + "|" + f.ts
		if !seen[k] {
			if len(seen)+1 >= 128 {
				return files[:i], files[i:]
			}
			seen[k] = true
		}
	}
	return files, nil
}
