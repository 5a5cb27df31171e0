package assembly

import (
	"io"

	"dpersona/gateway/part10"
)

func readHeader(r io.Reader) (part10.Meta, part10.Instance, int64, error) {
	return part10.ReadFileHeader(r)
}
