package localcloud

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Lambda's limits on code.
const (
	maxZipBytes        = 50 << 20  // direct upload
	maxUnzippedBytes   = 250 << 20 // unzipped deployment package
	maxControlBodySize = 70 << 20  // base64 of a 50 MB zip plus JSON
)

// codeSha256 is Lambda's CodeSha256: base64 of the SHA-256 of the zip.
func codeSha256(zipBytes []byte) string {
	sum := sha256.Sum256(zipBytes)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// unzipTo extracts a deployment package into dir, refusing entries that
// escape it and packages bigger than Lambda allows.
func unzipTo(zipBytes []byte, dir string) error {
	zr, err := zip.NewReader(bytes.NewReader(zipBytes), int64(len(zipBytes)))
	if err != nil {
		return fmt.Errorf("read zip: %w", err)
	}
	var total uint64
	for _, f := range zr.File {
		total += f.UncompressedSize64
	}
	if total > maxUnzippedBytes {
		return fmt.Errorf("unzipped size %d exceeds the limit of %d bytes", total, maxUnzippedBytes)
	}
	root := filepath.Clean(dir)
	for _, f := range zr.File {
		name := filepath.FromSlash(f.Name)
		target := filepath.Join(root, name)
		if target != root && !strings.HasPrefix(target, root+string(filepath.Separator)) {
			return fmt.Errorf("zip entry %q escapes the package", f.Name)
		}
		mode := f.Mode()
		switch {
		case mode.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", f.Name, err)
			}
			continue
		case mode&os.ModeSymlink != 0:
			return fmt.Errorf("zip entry %q is a symlink, which localcloud does not extract", f.Name)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("create dir for %s: %w", f.Name, err)
		}
		if err := extractFile(f, target, mode.Perm()|0o444); err != nil {
			return err
		}
	}
	return nil
}

func extractFile(f *zip.File, target string, perm os.FileMode) error {
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("open zip entry %s: %w", f.Name, err)
	}
	defer rc.Close()
	out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", f.Name, err)
	}
	if _, err := io.Copy(out, io.LimitReader(rc, maxUnzippedBytes)); err != nil {
		out.Close()
		return fmt.Errorf("extract %s: %w", f.Name, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	return nil
}

// CodeSha256 is Lambda's CodeSha256 of a deployment package: the base64 of
// its SHA-256.
func CodeSha256(zipBytes []byte) string { return codeSha256(zipBytes) }
