export function init(config) {
  if (config === 'bad') throw new Error('bad config');
  return { relations: [] };
}
export function evaluate(tables, changes) {
  return changes.map((c) => {
    const t = tables[c.table];
    const row = c.new ?? c.old;
    const info = [typeof c.lsn, typeof c.table, String(c.new), String(c.old), t.columns.map((x) => x.typeName).join(','), JSON.stringify(row.map((v) => [v.tag, typeof v.val, v.val instanceof Uint8Array]), (k, x) => typeof x === 'bigint' ? 'big' : x)];
    return { tag: 'error', val: info.join('|') };
  });
}
