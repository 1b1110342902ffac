/** The process driver against the WorkerDriver contract (driver.contract.ts). */
import { processDriver } from './driver.ts';
import { workerDriverContract } from './driver.contract.ts';

workerDriverContract('process', () => processDriver({ heartbeatMs: 200 }));
