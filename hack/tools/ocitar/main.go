// ocitar writes the image of an OCI image layout as a `docker load` tarball under the name users pull
// (`ghcr.io/kappa-dev/kappa-operator:<version>`), with go-containerregistry's tarball writer.
// `crane pull` names a tarball after the registry it pulled from, which for `make image` is a
// registry on 127.0.0.1 that exists only during the build.
//
//	ocitar -layout DIR -tag REFERENCE -out FILE
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	dir := flag.String("layout", "", "the OCI image layout holding one image")
	tag := flag.String("tag", "", "the image's name in the tarball (repository:tag)")
	out := flag.String("out", "", "the tarball to write")
	flag.Parse()
	if *dir == "" || *tag == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: ocitar -layout DIR -tag REFERENCE -out FILE")
		os.Exit(2)
	}
	if err := run(*dir, *tag, *out); err != nil {
		fmt.Fprintf(os.Stderr, "ocitar: %v\n", err)
		os.Exit(1)
	}
}

func run(dir, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", tag, err)
	}
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("-layout %q: %w", dir, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return err
	}
	if len(manifest.Manifests) != 1 {
		return fmt.Errorf("-layout %q holds %d images; one expected", dir, len(manifest.Manifests))
	}
	img, err := index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}
