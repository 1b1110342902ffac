/** Reading request headers and query values that Node may hand over as arrays. */

/** The first value of a header or query parameter given more than once; the value itself otherwise. */
export function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
