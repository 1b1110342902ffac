/** HTTP ingest: device messages posted over HTTP into the trigger log (the API serves the route). */
export {
  HttpIngest,
  HTTP_INGEST_SOURCE,
  DEFAULT_INGEST_TOPIC,
  DEFAULT_MAX_IN_FLIGHT,
  type HttpIngestOptions,
  type IngestAnswer,
  type IngestAuthorization,
  type IngestGrant,
  type IngestRequest,
} from './http-ingest.ts';
