export { startBroker, type BrokerOptions, type RunningBroker } from './broker.ts';
