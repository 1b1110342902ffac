/**
 * `/api/sim`: start, watch and stop one device-fleet simulation in the platform's process
 * (the dashboard's simulator panel). The simulator itself lives in devices-sim; the
 * composition root (cli/platform.ts) hands a controller in. Platform tokens only: a fleet
 * of registered devices is the platform's business. POST and DELETE need the admin scope.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { httpStatus, VoltlineError } from '../../lib/errors.ts';

/** What the routes need of the simulator (devices-sim's SimController fits). */
export interface SimControl {
  start(request: SimStartRequest): Promise<object>;
  /** The scenario library (name, description, fleet, duration, phases). */
  scenarios(): Promise<object[]>;
  stop(): Promise<object>;
  status(): object;
}

export const SimStartBody = z
  .object({
    stations: z.number().int().min(1).max(10_000).optional(),
    ratePerSec: z.number().positive().max(100_000).optional(),
    /** A scenario of the library (GET /api/sim/scenarios); the fields given as well override it. */
    scenario: z.string().min(1).max(64).optional(),
    durationMs: z.number().int().min(1).max(3_600_000).optional(),
    seed: z.number().int().min(0).optional(),
    qos: z.union([z.literal(0), z.literal(1)]).optional(),
    prefix: z.string().min(1).max(64).optional(),
    first: z.number().int().min(0).optional(),
    speed: z.number().min(1).max(3_600).optional(),
    startMs: z.number().int().optional(),
  })
  .strict()
  .refine((body) => body.scenario !== undefined || body.durationMs !== undefined, { message: 'is required without a scenario', path: ['durationMs'] })
  .refine((body) => body.scenario === undefined || body.durationMs === undefined, {
    message: 'cannot be given with a scenario (its phases set it)',
    path: ['durationMs'],
  });
export type SimStartRequest = z.infer<typeof SimStartBody>;

export function simRoutes(sim: SimControl): FastifyPluginAsync {
  return async (app: FastifyInstance) => {
    app.setErrorHandler((err, _request, reply) => {
      if (err instanceof z.ZodError) {
        const issue = err.issues[0];
        const field = issue?.path.join('.') ?? '';
        return reply.code(400).send({
          error: { code: 'VL_SIM_BAD_OPTIONS', message: `Cannot start a simulation as '${field}' is invalid: ${issue?.message ?? 'invalid'}`, field },
        });
      }
      if (err instanceof VoltlineError) return reply.code(httpStatus(err)).send({ error: { code: err.code, message: err.message, ...err.context } });
      throw err;
    });
    app.get('/api/sim', async () => sim.status());
    app.get('/api/sim/scenarios', async () => ({ scenarios: await sim.scenarios() }));
    app.post('/api/sim', { bodyLimit: 16 * 1024 }, async (request, reply) => {
      const body = SimStartBody.parse(request.body ?? {});
      return reply.code(202).send(await sim.start(body));
    });
    app.delete('/api/sim', async () => sim.stop());
  };
}
