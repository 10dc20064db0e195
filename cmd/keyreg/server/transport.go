package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"syscall"
)

// loadTLS loads a certificate and its key (PEM files) for a listener; both empty: nil,
// plain TCP. The flag names go into the errors.
func loadTLS(certFlag, certFile, keyFlag, keyFile string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "":
		return nil, fmt.Errorf("serve: %s needs %s", keyFlag, certFlag)
	case keyFile == "":
		return nil, fmt.Errorf("serve: %s needs %s", certFlag, keyFlag)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("serve: %s %s / %s %s: %w", certFlag, certFile, keyFlag, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// listenErr says plainly that a port is taken.
func listenErr(err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("already in use by another process (choose another port or stop it): %w", err)
	}
	return err
}
