/**
 * The public key banger's releases, kernel catalog and image bundles are
 * signed with (ECDSA P-256; the private half is held by the maintainers,
 * never in this repository). `--pubkey-file` replaces it for one command:
 * the tests sign with keys of their own.
 */
export const RELEASE_PUBLIC_KEY = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE7+pEOTkPhSH5egcJ0QWky0a45v1v
2GkW9JkTqKIQuB4JQR3OftpDJCcjb3VHQUJVfBDe2uim/VK0FbDN7N/tXg==
-----END PUBLIC KEY-----
`;
