package wire

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAdminCred(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "nope.cred"), "does not exist"},
		{"bad JSON", write("bad.cred", "{not json"), "not valid JSON"},
		{"unknown field", write("extra.cred", `{"url":"https://x:1","pin":"sha256/x","secret":"s","x":1}`), "unknown field"},
		{"missing fields", write("empty.cred", `{"url":"https://x:1"}`), "lacks pin, secret"},
		{"not https", write("http.cred", `{"url":"http://x:1","pin":"sha256/x","secret":"s"}`), "not https"},
		{"bad pin", write("pin.cred", `{"url":"https://x:1","pin":"md5/x","secret":"s"}`), "does not start with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LoadAdminCred(tt.path); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadAdminCred = %v, want error containing %q", err, tt.want)
			}
		})
	}
	want := AdminCred{URL: "https://127.0.0.1:1", Pin: PinPrefix + "x", Secret: "s"}
	got, err := LoadAdminCred(write("good.cred", `{"url":"https://127.0.0.1:1","pin":"`+want.Pin+`","secret":"s"}`))
	if err != nil || got != want {
		t.Fatalf("LoadAdminCred(good) = %+v, %v; want %+v", got, err, want)
	}
}
