package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for a node reachable at 127.0.0.1,
// usable as server and client.
func (ca *testCA) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// tlsFiles writes a node's certificate, key and CA to files and loads them
// with LoadMutualTLS.
func tlsFiles(t *testing.T, ca *testCA, serial int64) *tls.Config {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM := ca.issue(t, serial)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := LoadMutualTLS(write("node.crt", certPEM), write("node.key", keyPEM), write("ca.crt", ca.pem))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "flotilla test CA")
	start2 := func(id uint64, tc *tls.Config) (*Transport, *fakeHandler) {
		cfg := testConfig(id, nil)
		cfg.TLS = tc
		return start(t, cfg)
	}
	a, ha := start2(1, tlsFiles(t, ca, 2))
	b, hb := start2(2, tlsFiles(t, ca, 3))
	link(a, b)
	if err := a.Send(2, msgs(1, 2, 0, 3)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "messages over TLS", func() bool { return len(hb.messages(1)) == 3 })
	if err := b.SendSnapshot(context.Background(), snapHeader(2, 1), &genBody{chunks: 4, size: 64 << 10}); err != nil {
		t.Fatalf("snapshot over TLS: %v", err)
	}
	if len(ha.snapshots()) != 1 {
		t.Fatal("snapshot not received")
	}

	// Refused: a node of another CA, a node without a client certificate,
	// a plaintext node.
	other := newTestCA(t, "another CA")
	noClientCert := tlsFiles(t, ca, 4).Clone()
	noClientCert.Certificates = nil
	for name, tc := range map[string]*tls.Config{
		"other CA":       tlsFiles(t, other, 5),
		"no client cert": noClientCert,
		"plaintext":      nil,
	} {
		c, hc := start2(3, tc)
		link(a, c)
		waitUntil(t, name+": peer unreachable", func() bool {
			c.Send(1, msgs(3, 1, 0, 1))
			return hc.unreachable(1) > 0
		})
		if len(ha.messages(3)) != 0 {
			t.Fatalf("%s: message delivered", name)
		}
		c.Close()
	}
}
