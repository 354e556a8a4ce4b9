//! The version matrix: the core end-to-end scenarios of `pitr_tests::matrix` against a real
//! server of every supported PostgreSQL major (13 to 18), one test per major and scenario,
//! named `pg<major>_<scenario>` so that the output counts them per major. The servers of
//! majors other than Debian's come from `scripts/pg/install-majors.sh`; a missing one fails.

use pitr_tests::matrix;
use pitr_tests::pg::MAJORS;

macro_rules! majors {
    ($($major:literal => $archive:ident, $pitr:ident, $receive:ident, $prepared:ident;)*) => {
        $(
            #[test]
            fn $archive() {
                matrix::archive_and_fetch($major);
            }

            #[test]
            fn $pitr() {
                matrix::backup_and_point_in_time($major);
            }

            #[test]
            fn $receive() {
                matrix::synchronous_receiver($major);
            }

            #[test]
            fn $prepared() {
                matrix::prepared_transaction_target($major);
            }
        )*

        #[test]
        fn every_supported_major_is_in_the_matrix() {
            assert_eq!([$($major),*], MAJORS);
        }
    };
}

majors! {
    13 => pg13_archive_and_fetch, pg13_backup_and_point_in_time, pg13_synchronous_receiver,
        pg13_prepared_transaction_target;
    14 => pg14_archive_and_fetch, pg14_backup_and_point_in_time, pg14_synchronous_receiver,
        pg14_prepared_transaction_target;
    15 => pg15_archive_and_fetch, pg15_backup_and_point_in_time, pg15_synchronous_receiver,
        pg15_prepared_transaction_target;
    16 => pg16_archive_and_fetch, pg16_backup_and_point_in_time, pg16_synchronous_receiver,
        pg16_prepared_transaction_target;
    17 => pg17_archive_and_fetch, pg17_backup_and_point_in_time, pg17_synchronous_receiver,
        pg17_prepared_transaction_target;
    18 => pg18_archive_and_fetch, pg18_backup_and_point_in_time, pg18_synchronous_receiver,
        pg18_prepared_transaction_target;
}
