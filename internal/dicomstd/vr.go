package dicomstd

// LongVR reports whether an explicit VR encodes its length in 4 bytes after 2 reserved bytes
// (PS3.5 7.1.2, table 7.1-1) rather than in 2 bytes.
func LongVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}
