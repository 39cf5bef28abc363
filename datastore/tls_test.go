package datastore_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// certPair writes a certificate (signed by ca, or self-signed when ca is
// nil) and its key to dir/name.{crt,key}.
func certPair(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// etcd with mutual TLS (certificates made here): tabby's store connects with
// the CA, certificate and key that ETCD_CA_CERT_FILE, ETCD_CERT_FILE and
// ETCD_KEY_FILE name; plain text, and TLS without a client certificate, are
// refused.
func TestEtcdMutualTLS(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip("needs etcd: " + err.Error())
	}
	dir := t.TempDir()
	ca, caKey := certPair(t, dir, "ca", nil, nil, true)
	certPair(t, dir, "server", ca, caKey, false)
	certPair(t, dir, "client", ca, caKey, false)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--name", "tls", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", "unix://peer:2", "--initial-advertise-peer-urls", "unix://peer:2", "--initial-cluster", "tls=unix://peer:2",
		"--cert-file", filepath.Join(dir, "server.crt"), "--key-file", filepath.Join(dir, "server.key"),
		"--trusted-ca-file", filepath.Join(dir, "ca.crt"), "--client-cert-auth", "--log-level", "error")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	cfg := datastore.Config{Endpoints: []string{url}, CAFile: filepath.Join(dir, "ca.crt"),
		CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"), Timeout: 2 * time.Second}
	var st *datastore.Store
	for i := 0; i < 50; i++ {
		if st, err = datastore.Open(context.Background(), cfg); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	defer st.Close()
	if err := st.Put(context.Background(), datastore.PoolKey("tls"), &datastore.IPPool{Name: "tls", CIDR: "10.0.0.0/16"}); err != nil {
		t.Fatalf("write over TLS: %v", err)
	}
	plain := cfg
	plain.CAFile, plain.CertFile, plain.KeyFile = "", "", ""
	plain.Endpoints = []string{fmt.Sprintf("http://127.0.0.1:%d", port)}
	if s, err := datastore.Open(context.Background(), plain); err == nil {
		s.Close()
		t.Fatal("plain text was accepted by an etcd that requires TLS")
	} else if !errors.Is(err, datastore.ErrUnavailable) {
		t.Fatalf("plain text refused, but not as unreachable: %v", err)
	}
	noCert := cfg
	noCert.CertFile, noCert.KeyFile = "", ""
	if s, err := datastore.Open(context.Background(), noCert); err == nil {
		s.Close()
		t.Fatal("TLS without a client certificate was accepted")
	}
	// A row of `make reliability-report`.
	t.Logf("REPORT\tsecurity\tetcd with mutual TLS: works; plain text and TLS without a client certificate refused\tas expected\tpass")
}
