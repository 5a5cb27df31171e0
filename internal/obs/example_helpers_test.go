package obs_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

func jsonDecode(rsp *http.Response, v any) error {
	defer rsp.Body.Close()
	return json.NewDecoder(rsp.Body).Decode(v)
}

func bodyContains(rsp *http.Response, s string) bool {
	defer rsp.Body.Close()
	b, _ := io.ReadAll(rsp.Body)
	return strings.Contains(string(b), s)
}
