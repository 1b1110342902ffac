/** Device identities: the registry (ingest/devices) and what the broker asks of it. */
export type { AuthFailure, AuthVerdict, Device, DeviceCertificate, DeviceDirectory } from './types.ts';
export {
  CA_CERT_FILE,
  CA_FOLDER,
  CA_KEY_FILE,
  DEVICE_CERT_VALIDITY_DAYS,
  normalizeFingerprint,
  PlatformCa,
  type DeviceCertificateIssuer,
  type IssuedCertificate,
  type PlatformCaOptions,
} from './ca.ts';
export {
  DeviceRegistry,
  DEVICE_ID_PATTERN,
  DEVICE_STATE_KIND,
  DEVICES_FILE,
  DEVICES_FOLDER,
  JOURNAL_FILE,
  SCRYPT_DEFAULTS,
  deviceIdProblem,
  type DeviceChange,
  type DevicePage,
  type DeviceRegistryOptions,
  type IssuedToken,
  type ListOptions,
  type NewDevice,
  type ScryptParams,
} from './registry.ts';
export { deviceListOf, parseDeviceCsv } from './device-list.ts';
export { mosquittoAcl, mosquittoConfig, mosquittoPasswordFile, mosquittoPasswordLine, MOSQUITTO_PBKDF2, type MosquittoAccess } from './mosquitto.ts';
