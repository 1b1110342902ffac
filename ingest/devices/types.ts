/**
 * Device identities: what the device registry (ingest/devices) keeps and what the broker
 * asks it. A device is a station (or any MQTT client) with an id, a tenant, and a secret
 * token of which only a salted scrypt hash is stored.
 */

/** A registered device, as the registry shows it (never its token or hash). */
export interface Device {
  /** Its identity: the MQTT username and client id it must use. */
  readonly id: string;
  /** Whose device it is (`default` unless added with a tenant). */
  readonly tenant: string;
  /** A disabled device is refused at connect; enabling it again restores it. */
  readonly enabled: boolean;
  /** Epoch ms. */
  readonly createdAt: number;
  /** When its token was last set (added or rotated), epoch ms. */
  readonly tokenSetAt: number;
  /**
   * Its client certificate, issued by the platform CA (`devices add --cert`, `rotate --cert`):
   * absent when it has none. Only this certificate authenticates it over TLS.
   */
  readonly cert?: DeviceCertificate | undefined;
}

/** What the registry records of a device's certificate (never its private key). */
export interface DeviceCertificate {
  /** SHA-256 of the certificate's DER, lower-case hex: the broker compares it with the peer's. */
  readonly fingerprint: string;
  /** Serial number, upper-case hex. */
  readonly serial: string;
  /** Epoch ms. */
  readonly issuedAt: number;
  readonly notAfter: number;
}

/** Why a device was refused at connect (the `reason` label of voltline_auth_failures_total). */
export type AuthFailure = 'unknown_device' | 'bad_token' | 'disabled' | 'no_credentials' | 'bad_certificate';

export type AuthVerdict = { readonly ok: true; readonly device: Device } | { readonly ok: false; readonly reason: AuthFailure };

/** What the broker needs from the registry. */
export interface DeviceDirectory {
  /**
   * Checks a device's id and token (constant-time comparison of scrypt hashes). Never
   * throws for bad credentials: it says why they were refused. It may reject when the
   * registry is overloaded (DeviceRegistry: VL_DEVICES_BUSY, retriable, past
   * `maxPendingHashes` waiting checks): refuse the connection as unavailable, not as bad
   * credentials.
   */
  authenticate(id: string, token: string): Promise<AuthVerdict>;
  /**
   * Checks a client certificate the TLS layer has already verified against the platform CA:
   * its subject names `id`, and its SHA-256 `fingerprint` (lower-case hex) must be the one
   * recorded for that device. `bad_certificate` when the device is unknown, has no
   * certificate or another one (rotated), `disabled` when it is the right certificate of a
   * disabled device. No secret is involved (a certificate is public; the TLS handshake
   * proved the key), so no hash and no waiting.
   */
  authenticateCertificate(id: string, fingerprint: string): AuthVerdict;
  /** The device, or undefined when there is none of that id. */
  get(id: string): Device | undefined;
}
