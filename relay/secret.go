package relay

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/agentnet/agentnet/internal/atomicfile"
	"github.com/agentnet/agentnet/relay/turncred"
)

// Files in Config.DataDir.
const (
	fileSecret = "relay.secret" // base64 of the shared secret, 0600
	fileCred   = "relay.cred"   // turncred.Cred JSON for the coordinator, 0600
	fileTLSKey = "tls.key"      // ECDSA P-256, PKCS#8 PEM, 0600 (internal/pincert)
	fileTLSCrt = "tls.crt"      // self-signed, PEM, 0600
)

// secretLen is the size of a generated secret.
const secretLen = 32

// loadOrCreateSecret reads the base64 secret in path or creates 32 random
// bytes there (0600) on first start.
func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		secret := make([]byte, secretLen)
		_, _ = rand.Read(secret)
		if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("relay: write secret: %w", err)
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay: read secret: %w", err)
	}
	secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < turncred.MinSecretLen {
		return nil, fmt.Errorf("relay: secret file %s must hold base64 of at least %d bytes (e.g. 'head -c32 /dev/urandom | base64'); delete it to have one generated", path, turncred.MinSecretLen)
	}
	return secret, nil
}
