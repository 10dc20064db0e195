// Package natslog is the event log of package events on NATS JetStream: the KEYREG
// stream's configuration (StreamConfig), the log on it (Open, Log), which appends with
// optimistic concurrency and atomic batches, reads with direct gets, and follows with
// ordered consumers filtered on the server (Log.FollowSubject).
//
// It uses nats.go only: the embedded server keyreg runs, and the rights of its users, are
// in package natsserver below it. It imports no keyreg package but events.
package natslog
