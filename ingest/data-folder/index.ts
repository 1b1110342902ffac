/**
 * The data folder's size limit: the watcher (`DataFolderGuard`) the ways in read to push
 * back on new device messages near the limit, its settings, and the ordered hold of a
 * connection's messages.
 */
export { DataFolderGuard, DEFAULT_CHECK_INTERVAL_MS, DEFAULT_MAX_DELAY_MS, type DataFolderGuardOptions, type DataFolderStatus } from './data-folder-guard.ts';
export { DataFolderSettingsSchema, DEFAULT_MIN_FREE_BYTES, type DataFolderSettings } from './options.ts';
export { OrderedHold } from './ordered-hold.ts';
export { folderSize, type FolderSize } from './folder-size.ts';
export type { DataFolderBound, DataFolderLevel } from './pressure.ts';
