package plugin

import (
	"strings"
	"testing"
	"time"
)

func TestEnvWinsOverDefault(t *testing.T) {
	env := map[string]string{"TABBY_SOCKET": "/env/tabby.sock", "NODENAME": "envnode", "ETCD_ENDPOINTS": "http://a:2379, http://b:2379"}
	getenv := func(k string) string { return env[k] }
	cfg := DefaultConfig()
	cfg.FromEnv(getenv)
	if cfg.Socket != "/env/tabby.sock" || cfg.NodeName != "envnode" || len(cfg.EtcdEndpoints) != 2 || cfg.EtcdEndpoints[1] != "http://b:2379" {
		t.Fatalf("env not applied: %+v", cfg)
	}
	if cfg.PoolCIDR != "192.168.0.0/16" || cfg.RunDir != "/run/tabby" {
		t.Fatalf("defaults lost: %+v", cfg)
	}
}

func TestValidateNamesEveryBadSetting(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Socket = "relative.sock"
	cfg.IP = "300.1.1.1"
	cfg.AS = "x"
	cfg.PoolIPIP = "Sometimes"
	cfg.LogLevel = "loud"
	cfg.IPAMGCGrace = "soon"
	cfg.EndpointToHost = "sometimes"
	cfg.NodeName = "../etc"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"--socket", "--ip ", "--as", "--ipv4pool-ipip", "--log-level", "--ipam-gc-grace", "--endpoint-to-host", "--nodename"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not name %s:\n%v", want, err)
		}
	}
	good := DefaultConfig()
	good.NodeName = "n"
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults must validate: %v", err)
	}
	for v, want := range map[string]time.Duration{"15m": 15 * time.Minute, "0": 0, "2s": 2 * time.Second} {
		good.IPAMGCGrace = v
		if got, err := good.GCGrace(); err != nil || got != want {
			t.Fatalf("--ipam-gc-grace %s = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"-1m", "10ms"} {
		good.IPAMGCGrace = v
		if err := good.Validate(); err == nil || !strings.Contains(err.Error(), "--ipam-gc-grace") {
			t.Fatalf("--ipam-gc-grace %s accepted: %v", v, err)
		}
	}
	both := DefaultConfig()
	both.PoolIPIP, both.PoolVXLAN = "Always", "Always"
	if err := both.Validate(); err == nil || !strings.Contains(err.Error(), "cannot both be on") {
		t.Fatalf("IPIP and VXLAN together: %v", err)
	}
}
