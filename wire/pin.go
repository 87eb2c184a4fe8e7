package wire

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
)

// PinPrefix starts a certificate pin: "sha256/" + base64 of the SHA-256 of
// the certificate's SubjectPublicKeyInfo (the HPKP pin format, RFC 7469 §2.4).
const PinPrefix = "sha256/"

// ErrPinMismatch means the coordinator presented a certificate other than
// the pinned one.
var ErrPinMismatch = errors.New("coordinator certificate does not match the pin")

// CertPin returns the pin of a certificate.
func CertPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return PinPrefix + base64.StdEncoding.EncodeToString(sum[:])
}

// PinnedTLSConfig trusts exactly the certificate with the given pin, whatever
// name or CA it has: the coordinator's certificate is self-signed and the pin
// reached the client out of band (join token or admin.cred).
func PinnedTLSConfig(pin string) *tls.Config {
	return PinnedTLSConfigFor(pin, ErrPinMismatch, "; check the token or admin.cred is for this coordinator")
}

// PinnedTLSConfigFor is PinnedTLSConfig for any self-signed server (a
// relay's TLS listener too): a certificate other than pin fails the
// handshake with an error wrapping mismatch, followed by hint.
func PinnedTLSConfigFor(pin string, mismatch error, hint string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate presented", mismatch)
			}
			got := CertPin(cs.PeerCertificates[0])
			if subtle.ConstantTimeCompare([]byte(got), []byte(pin)) != 1 {
				return fmt.Errorf("%w: got %s, want %s%s", mismatch, got, pin, hint)
			}
			return nil
		},
	}
}
