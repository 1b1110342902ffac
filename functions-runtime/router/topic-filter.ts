/**
 * MQTT topic filters, as OASIS MQTT 3.1.1 §4.7 defines them.
 */

/** Why a filter is invalid, or undefined when it is valid. */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'a topic filter must not be empty [MQTT-4.7.3-1]';
  if (filter.includes('\u0000')) return 'a topic filter must not contain U+0000 [MQTT-4.7.3-2]';
  const levels = filter.split('/');
  for (const [i, level] of levels.entries()) {
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return "'#' must be a whole level and the last one [MQTT-4.7.1-2]";
    }
    if (level.includes('+') && level !== '+') return "'+' must occupy a whole level [MQTT-4.7.1-3]";
  }
  return undefined;
}

/**
 * Whether `topic` matches `filter`. Wildcards at the first level do not match topics
 * starting with '$' [MQTT-4.7.2-1].
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}
