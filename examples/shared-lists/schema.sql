-- Lists shared through a membership table: a list and its items belong to the owner's bucket
-- and to each member's.
create table lists (id bigint primary key, owner_id text not null, title text not null);
create table list_members (list_id bigint not null references lists(id), user_id text not null,
  primary key (list_id, user_id));
create table items (id bigint primary key, list_id bigint not null references lists(id), title text not null);
