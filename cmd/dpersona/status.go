package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"dpersona/dispatch"
	"dpersona/gateway/assembly"
	"dpersona/internal/obs"
)

func init() { registerCommand(newStatusCommand) }

// statusOptions are the flags of `dpersona status`.
type statusOptions struct {
	addr    string
	token   string
	timeout time.Duration
	live    bool // only /healthz: the container health check
}

func newStatusCommand() *cobra.Command {
	opts := statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what a running gateway is doing (studies, associations, readiness, failures)",
		Long: `status asks a running gateway's HTTP endpoint (/readyz, /api/studies, /api/status) and prints a
short summary for operators. The address is the one given to "serve --http-listen".
The API token may also come from the environment variable DPERSONA_API_TOKEN, which keeps it out
of the process list. Exits non-zero when the gateway cannot be reached or is not ready.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.token == "" {
				opts.token = os.Getenv("DPERSONA_API_TOKEN")
			}
			return runStatus(cmd.Context(), cmd.OutOrStdout(), opts)
		},
	}
	def := os.Getenv("DPERSONA_HTTP")
	if def == "" {
		def = "127.0.0.1:8080"
	}
	cmd.Flags().StringVar(&opts.addr, "http", def, "gateway HTTP address, HOST:PORT or URL (env DPERSONA_HTTP)")
	cmd.Flags().StringVar(&opts.token, "token", "", "bearer token of the gateway API (env DPERSONA_API_TOKEN)")
	cmd.Flags().DurationVar(&opts.timeout, "timeout", 5*time.Second, "deadline of each request")
	cmd.Flags().BoolVar(&opts.live, "live", false, "only check liveness (/healthz), print nothing on success: for container health checks")
	return cmd
}

// apiStudy is the part of a /api/studies entry that the summary uses.
type apiStudy struct {
	StudyInstanceUID string `json:"study_instance_uid"`
	CalledAE         string `json:"called_ae"`
	State            string `json:"state"`
	Instances        int    `json:"instances"`
}

// gatewayStatus is everything status gathered; a part that could not be fetched has its error set.
type gatewayStatus struct {
	base       string
	ready      *obs.ReadyReport
	readyErr   error
	studies    []apiStudy
	studiesErr error
	summary    *obs.Summary
	summaryErr error
}

// baseURL turns "HOST:PORT", ":PORT" or a URL into a URL without a trailing slash.
func baseURL(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", errors.New("--http is empty: give the gateway's HTTP address, e.g. 127.0.0.1:8080")
	}
	if !strings.Contains(addr, "://") {
		if strings.HasPrefix(addr, ":") {
			addr = "127.0.0.1" + addr
		}
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--http %q is not HOST:PORT or an http(s) URL", addr)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func runStatus(ctx context.Context, out io.Writer, opts statusOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	base, err := baseURL(opts.addr)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: opts.timeout}
	if opts.live {
		return checkLive(ctx, client, base)
	}
	st := gatewayStatus{base: base}

	// /readyz first: when it cannot be reached, nothing else can, and the error says why.
	var rep obs.ReadyReport
	code, err := getJSONStatus(ctx, client, base+"/readyz", "", &rep)
	switch {
	case err != nil && isUnreachable(err):
		return fmt.Errorf("gateway not reachable at %s: %v (is `dpersona serve` running, and is --http the address of its --http-listen?)", base, rootCause(err))
	case err != nil:
		st.readyErr = err
	case code != http.StatusOK && code != http.StatusServiceUnavailable:
		st.readyErr = fmt.Errorf("/readyz answered HTTP %d", code)
	default:
		st.ready = &rep
	}

	var studies []apiStudy
	code, err = getJSONStatus(ctx, client, base+"/api/studies", opts.token, &studies)
	switch {
	case err != nil:
		st.studiesErr = err
	case code == http.StatusUnauthorized:
		st.studiesErr = errors.New("the gateway refused the API token (HTTP 401): pass --token or set DPERSONA_API_TOKEN")
	case code != http.StatusOK:
		st.studiesErr = fmt.Errorf("/api/studies answered HTTP %d", code)
	default:
		st.studies = studies
	}

	var sum obs.Summary
	code, err = getJSONStatus(ctx, client, base+"/api/status", opts.token, &sum)
	switch {
	case err != nil:
		st.summaryErr = err
	case code == http.StatusUnauthorized:
		st.summaryErr = errors.New("the gateway refused the API token (HTTP 401)")
	case code != http.StatusOK:
		st.summaryErr = fmt.Errorf("/api/status answered HTTP %d", code)
	default:
		st.summary = &sum
	}

	printStatus(out, &st)
	if st.ready == nil || st.ready.Status != "ready" {
		return errors.New("gateway is not ready")
	}
	return nil
}

// checkLive succeeds when /healthz answers 200: the process serves HTTP.
func checkLive(ctx context.Context, c *http.Client, base string) error {
	req, err := newRequest(ctx, base+"/healthz", "")
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("gateway not reachable at %s: %v", base, rootCause(err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/healthz answered HTTP %d", base, resp.StatusCode)
	}
	return nil
}

func newRequest(ctx context.Context, u, token string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

// getJSONStatus fetches u and decodes a JSON body into v when the status is 200 or 503 (the two
// answers of /readyz that carry a report).
func getJSONStatus(ctx context.Context, c *http.Client, u, token string, v any) (int, error) {
	req, err := newRequest(ctx, u, token)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("%s: body is not the expected JSON: %v", u, err)
	}
	return resp.StatusCode, nil
}

// isUnreachable tells a connection failure (nothing listening, no route, DNS, timeout) from an
// HTTP-level problem.
func isUnreachable(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var nerr net.Error
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || (errors.As(err, &nerr) && nerr.Timeout())
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// stateOrder puts the pipeline's states in the order a study passes through them (the gateway's,
// then the bus's); unknown ones follow alphabetically.
var stateOrder = map[string]int{
	assembly.StateReceiving: 0, assembly.StateComplete: 1,
	dispatch.StateReceived: 2, dispatch.StateInferring: 3, dispatch.StateExporting: 4,
	dispatch.StateDone: 5, dispatch.StateFailed: 6,
}

func printStatus(out io.Writer, st *gatewayStatus) {
	fmt.Fprintf(out, "gateway     %s", st.base)
	if st.summary != nil && st.summary.Version != "" {
		fmt.Fprintf(out, "  (version %s)", st.summary.Version)
	}
	fmt.Fprintln(out)

	switch {
	case st.readyErr != nil:
		fmt.Fprintf(out, "readiness   unknown: %v\n", st.readyErr)
	default:
		fmt.Fprintf(out, "readiness   %s\n", st.ready.Status)
		for _, c := range st.ready.Checks {
			mark := "ok  "
			if !c.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(out, "  %s %-10s %7.1f ms", mark, c.Name, c.DurationMS)
			if c.Error != "" {
				fmt.Fprintf(out, "  %s", c.Error)
			}
			fmt.Fprintln(out)
		}
	}

	if st.studiesErr != nil {
		fmt.Fprintf(out, "studies     unavailable: %v\n", st.studiesErr)
	} else {
		byState := map[string]int{}
		instances := 0
		for _, s := range st.studies {
			byState[s.State]++
			instances += s.Instances
		}
		states := make([]string, 0, len(byState))
		for s := range byState {
			states = append(states, s)
		}
		sort.Slice(states, func(i, j int) bool {
			oi, iok := stateOrder[states[i]]
			oj, jok := stateOrder[states[j]]
			if iok != jok {
				return iok
			}
			if iok && oi != oj {
				return oi < oj
			}
			return states[i] < states[j]
		})
		parts := make([]string, len(states))
		for i, s := range states {
			parts[i] = fmt.Sprintf("%s %d", s, byState[s])
		}
		fmt.Fprintf(out, "studies     %d (%d instances)", len(st.studies), instances)
		if len(parts) > 0 {
			fmt.Fprintf(out, ": %s", strings.Join(parts, ", "))
		}
		fmt.Fprintln(out)
	}

	if st.summaryErr != nil {
		fmt.Fprintf(out, "metrics     unavailable: %v\n", st.summaryErr)
		return
	}
	m := st.summary
	fmt.Fprintf(out, "associations %s active, %s accepted, %s rejected\n",
		num(m.AssociationsActive), num(m.AssociationsAccepted), num(m.AssociationsRejected))
	fmt.Fprintf(out, "received    %s instances, %s\n", num(m.InstancesReceived), bytesHuman(m.BytesReceived))
	if len(m.Rejections) > 0 {
		fmt.Fprintf(out, "rejections  %s\n", joinLabelValues(m.Rejections))
	}
	if m.InferenceRuns > 0 {
		fmt.Fprintf(out, "inference   %d runs, mean %.2f s, %s failed\n", m.InferenceRuns,
			m.InferenceSeconds/float64(m.InferenceRuns), num(m.InferenceFailures))
	} else if m.InferenceFailures > 0 {
		fmt.Fprintf(out, "inference   0 runs, %s failed\n", num(m.InferenceFailures))
	}
	fmt.Fprintf(out, "exports     %s delivered", num(m.ExportsDelivered))
	if len(m.ExportFailures) > 0 {
		fmt.Fprintf(out, ", failed attempts: %s", joinLabelValues(m.ExportFailures))
	} else {
		fmt.Fprint(out, ", no failures")
	}
	fmt.Fprintln(out)
	if len(m.Queues) > 0 {
		fmt.Fprintf(out, "queues      %s\n", joinLabelValues(m.Queues))
	}
}

func joinLabelValues(in []obs.LabelValue) string {
	parts := make([]string, len(in))
	for i, lv := range in {
		parts[i] = fmt.Sprintf("%s %s", lv.Label, num(lv.Value))
	}
	return strings.Join(parts, ", ")
}

func num(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.2f", v)
}

func bytesHuman(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", int64(b))
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}
