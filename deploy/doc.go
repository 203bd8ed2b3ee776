// Package deploy checks the deployment files at the repository root.
//
// It has no code of its own: its tests load .env.example, the compose files
// and Dockerfile.multitenant the way Docker Compose would and compare them
// with the variables the server reads (config.Variables), so the files
// cannot drift from the binary unnoticed. No Docker engine is needed.
package deploy
