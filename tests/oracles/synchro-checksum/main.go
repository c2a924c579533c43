// The test oracle for sluice's synchro checksum: Go's own encoding/json and hash/crc32, standard
// library only. Each input line is one row's JSON as PostgreSQL's row_to_json gives it; each
// output line is the checksum synchro's server and clients compute for it, as a signed 32-bit
// integer (the way sync_bucket_edges.checksum stores it).
//
// The rule, as synchro defines it: decode the text into a map[string]any, encode the map again,
// take the CRC-32 (IEEE) of that; if decoding or encoding fails, the CRC-32 of the text itself.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
)

func checksum(text []byte) uint32 {
	var row map[string]any
	if err := json.Unmarshal(text, &row); err != nil {
		return crc32.ChecksumIEEE(text)
	}
	again, err := json.Marshal(row)
	if err != nil {
		return crc32.ChecksumIEEE(text)
	}
	return crc32.ChecksumIEEE(again)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		fmt.Fprintln(out, int32(checksum(in.Bytes())))
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
