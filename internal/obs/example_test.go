package obs_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"

	"dpersona/internal/obs"
)

// The wiring of cmd/dpersona/serve.go in small: probes and metrics open, the API behind a bearer
// token, readiness from named checks (here the bus is down).
func Example() {
	dataDir, _ := os.MkdirTemp("", "obs-example-")
	defer os.RemoveAll(dataDir)
	obs.SetBuildInfo("example")
	obs.WatchDiskFree(dataDir)

	apiMux := http.NewServeMux()
	apiMux.HandleFunc("GET /api/studies", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "[]") })
	mux := http.NewServeMux()
	mux.Handle("/api/", obs.RequireBearer("s3cret", apiMux))
	obs.Mount(mux,
		obs.DiskCheck(dataDir, 1),
		obs.Check{Name: "nats", Func: func(context.Context) error { return errors.New("no connection to nats://127.0.0.1:4222") }},
		obs.Check{Name: "model", Func: func(context.Context) error { return nil }})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(path, token string) *http.Response {
		rq, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			rq.Header.Set("Authorization", "Bearer "+token)
		}
		rsp, err := http.DefaultClient.Do(rq)
		if err != nil {
			panic(err)
		}
		return rsp
	}
	fmt.Println("/healthz", get("/healthz", "").StatusCode)
	rsp := get("/readyz", "")
	var rep obs.ReadyReport
	if err := jsonDecode(rsp, &rep); err != nil {
		panic(err)
	}
	fmt.Println("/readyz", rsp.StatusCode, rep.Status)
	for _, c := range rep.Checks {
		line := fmt.Sprintf("  %s ok=%v", c.Name, c.OK)
		if c.Error != "" {
			line += " " + c.Error
		}
		fmt.Println(line)
	}
	fmt.Println("/api/studies without token", get("/api/studies", "").StatusCode)
	fmt.Println("/api/studies with token", get("/api/studies", "s3cret").StatusCode)
	metrics := get("/metrics", "")
	fmt.Println("/metrics has build info:", bodyContains(metrics, `dpersona_build_info{version="example"`))
	// Output:
	// /healthz 200
	// /readyz 503 not ready
	//   disk ok=true
	//   nats ok=false no connection to nats://127.0.0.1:4222
	//   model ok=true
	// /api/studies without token 401
	// /api/studies with token 200
	// /metrics has build info: true
}
