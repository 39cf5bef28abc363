package plugin

import (
	"os"
	"path/filepath"
	"testing"
)

// node status finds a managed plugin's control socket in Docker's
// per-plugin directory when no daemon listens at the default run dir, and
// keeps the default (whose error names --run-dir) when none or several do.
func TestFindControlSocket(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "run", "ctl.sock")
	pattern := filepath.Join(dir, "plugins", "*", "ctl.sock")
	if got := FindDaemonSocket(def, pattern); got != def {
		t.Fatalf("nothing anywhere: got %s, want the default %s", got, def)
	}
	plugin := filepath.Join(dir, "plugins", "0123abcd", "ctl.sock")
	os.MkdirAll(filepath.Dir(plugin), 0o755)
	os.WriteFile(plugin, nil, 0o600)
	if got := FindDaemonSocket(def, pattern); got != plugin {
		t.Fatalf("one managed plugin: got %s, want %s", got, plugin)
	}
	other := filepath.Join(dir, "plugins", "4567ef01", "ctl.sock")
	os.MkdirAll(filepath.Dir(other), 0o755)
	os.WriteFile(other, nil, 0o600)
	if got := FindDaemonSocket(def, pattern); got != def {
		t.Fatalf("two managed plugins: got %s, want the default %s", got, def)
	}
	os.MkdirAll(filepath.Dir(def), 0o755)
	os.WriteFile(def, nil, 0o600)
	os.Remove(other)
	if got := FindDaemonSocket(def, pattern); got != def {
		t.Fatalf("a daemon at the default: got %s, want %s", got, def)
	}
}
