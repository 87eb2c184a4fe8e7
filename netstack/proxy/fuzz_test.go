package proxy

import (
	"bytes"
	"testing"
)

func FuzzParseUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 100, 96, 0, 2, 0, 53, 'x'})
	f.Add([]byte{0, 0, 0, 3, 6, 's', 'e', 'a', 'r', 'c', 'h', 0, 80})
	f.Add([]byte{0, 0, 0, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseUDPHeader(b)
	})
}

func FuzzReadAddr(f *testing.F) {
	f.Add(byte(3), []byte{1, 'a', 0, 1})
	f.Add(byte(1), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, atyp byte, b []byte) {
		readAddr(bytes.NewReader(b), atyp)
	})
}
