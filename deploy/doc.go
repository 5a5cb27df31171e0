// Package deploy holds the deployment files of dpersona (systemd, Docker, compose, Kubernetes,
// NATS Helm values). It has no code: its tests check that those files parse and stay consistent
// with the binary, the HTTP paths and the pinned onnxruntime, so that they cannot silently rot.
package deploy
