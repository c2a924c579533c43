-- synchro's Northwind test tables, as its test setup creates them (the parts sluice's
-- northwind rule reads), each with REPLICA IDENTITY FULL.
create type order_status as enum ('pending','processing','shipped','delivered','cancelled');
create table orders (id uuid primary key, user_id uuid not null, status order_status not null default 'pending',
  ship_address text not null default '', metadata jsonb not null default '{}', total_cents bigint not null default 0,
  created_at timestamptz not null default now(), updated_at timestamptz not null default now(), deleted_at timestamptz);
create table order_details (id uuid primary key, order_id uuid not null references orders(id),
  product_name text not null default '', quantity integer not null default 1, unit_price numeric(10,2) not null default 0,
  created_at timestamptz not null default now(), updated_at timestamptz not null default now(), deleted_at timestamptz);
create table products (id uuid primary key, name text not null default '', unit_price numeric(10,2) not null default 0,
  units_in_stock integer not null default 0, discontinued boolean not null default false, thumbnail bytea,
  created_at timestamptz not null default now(), updated_at timestamptz not null default now(), deleted_at timestamptz);
create table categories (id uuid primary key, user_id uuid, name text not null default '',
  description text not null default '', search_tags text[] not null default '{}',
  created_at timestamptz not null default now(), updated_at timestamptz not null default now(), deleted_at timestamptz);
alter table orders replica identity full;
alter table order_details replica identity full;
alter table products replica identity full;
alter table categories replica identity full;
