// Package replay rebuilds keyreg's views from the event log: full rebuilds and
// point-in-time rebuilds (up to a stream sequence or a time) into a fresh Pebble
// directory, the generations under <data>/projections with their atomic swap, and the
// key-by-key diff of two view stores. It also reads the past without a rebuild (KeyAsOf and
// the other as_of folds), writes audit exports (Exporter) and verifies them offline
// (VerifyExport).
//
// It imports events and projections only; never commands or cmd.
package replay
