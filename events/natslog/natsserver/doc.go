// Package natsserver runs keyreg's embedded NATS server with JetStream (Start,
// ConnectInProcess) and decides who may use it: keyreg's own in-process user with every
// right, and subscribers, services that read the KEYREG stream over TCP and nothing else
// (Subscriber, SubscriberPermissions, ConfinedPermissions).
//
// It is the only package outside cmd that imports nats-server; a program that only reads or
// writes the log over a connection needs package natslog, not this one. It imports no
// keyreg package but events.
package natsserver
