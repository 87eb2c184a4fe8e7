package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// AdminCred is the content of admin.cred (JSON, mode 0600): everything the
// administrator's tools need to reach and authenticate to the coordinator.
// The coordinator writes it into its data dir; admin clients read it with
// LoadAdminCred.
type AdminCred struct {
	URL    string `json:"url"`
	Pin    string `json:"pin"`
	Secret string `json:"secret"`
}

// LoadAdminCred reads and checks an admin.cred file.
func LoadAdminCred(path string) (AdminCred, error) {
	var c AdminCred
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("wire: admin credential %s does not exist; it is written by 'agentnet coordinator' into its data dir", path)
	}
	if err != nil {
		return c, fmt.Errorf("wire: read admin credential: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("wire: admin credential %s is not valid JSON: %w", path, err)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"url", c.URL}, {"pin", c.Pin}, {"secret", c.Secret}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return c, fmt.Errorf("wire: admin credential %s lacks %s", path, strings.Join(missing, ", "))
	}
	if !strings.HasPrefix(c.URL, "https://") {
		return c, fmt.Errorf("wire: admin credential %s: url %q is not https", path, c.URL)
	}
	if !strings.HasPrefix(c.Pin, PinPrefix) {
		return c, fmt.Errorf("wire: admin credential %s: pin %q does not start with %q", path, c.Pin, PinPrefix)
	}
	return c, nil
}
