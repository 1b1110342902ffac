import { describe, expect, it } from 'vitest';
import { topicFilterProblem, topicMatches } from './topic-filter.ts';

describe('topicMatches', () => {
  const cases: Array<[string, string, boolean]> = [
    ['stations/+/telemetry', 'stations/st-1/telemetry', true],
    ['stations/+/telemetry', 'stations/st-1/events', false],
    ['stations/+/telemetry', 'stations/st-1/telemetry/x', false],
    ['stations/#', 'stations', true], // [MQTT-4.7.1-2]: '#' also matches the parent level
    ['stations/#', 'stations/st-1/telemetry', true],
    ['#', 'anything/at/all', true],
    ['#', '$SYS/broker', false],
    ['+/broker', '$SYS/broker', false],
    ['$SYS/#', '$SYS/broker', true],
    ['a/+', 'a/', true],
    ['a/+/+', 'a/b', false],
    ['exact/topic', 'exact/topic', true],
    ['exact/topic', 'exact/Topic', false],
  ];
  for (const [filter, topic, expected] of cases) {
    it(`${filter} ${expected ? 'matches' : 'does not match'} ${topic}`, () => {
      expect(topicMatches(filter, topic)).toBe(expected);
    });
  }
});

describe('topicFilterProblem', () => {
  it('accepts valid filters', () => {
    for (const filter of ['a', 'a/b', '+', '#', 'a/+/c', 'a/#', '+/+/#']) expect(topicFilterProblem(filter)).toBeUndefined();
  });
  it('names the rule a bad filter breaks', () => {
    expect(topicFilterProblem('')).toMatch(/empty/);
    expect(topicFilterProblem('a/#/b')).toMatch(/'#'/);
    expect(topicFilterProblem('a#')).toMatch(/'#'/);
    expect(topicFilterProblem('a/b+')).toMatch(/'\+'/);
  });
});
